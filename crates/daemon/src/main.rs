//! `tiffanyd`: see the `tiffany_daemon` crate docs.

use clap::Parser;

fn main() {
    let args = tiffany_daemon::config::Args::parse();
    std::process::exit(tiffany_daemon::server::main_with(args));
}
