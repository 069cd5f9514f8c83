//! `tiffany`: see the `tiffany_cli` crate docs.

fn main() {
    std::process::exit(tiffany_cli::main_with(std::env::args_os()));
}
