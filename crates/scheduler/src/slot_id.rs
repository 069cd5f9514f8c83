//! Ids made of a table slot and a generation.
//!
//! I/O tokens and event ids name an entry of a slab. The slot alone would be
//! reused by the next entry once the first is removed; the generation (bumped
//! at every insertion) makes the id of a removed entry stale, so a call with
//! it is refused instead of reaching a newer entry in the same slot.

/// Implements `get`, `from_raw` and the slot/generation packing for a
/// `struct $name(u64)`.
macro_rules! slot_id {
    ($name:ident, $what:literal) => {
        impl $name {
            #[doc = concat!("The raw ", $what, " (slot and generation).")]
            pub const fn get(self) -> u64 {
                self.0
            }

            #[doc = concat!(
                "Rebuilds a ", $what, " from its raw value (as handed to a foreign ",
                "language). One that was never issued is refused by every call that takes it."
            )]
            pub const fn from_raw(raw: u64) -> Self {
                $name(raw)
            }

            fn new(slot: usize, generation: u32) -> Self {
                $name(((generation as u64) << 32) | slot as u64)
            }

            fn slot(self) -> usize {
                (self.0 & 0xffff_ffff) as usize
            }

            fn generation(self) -> u32 {
                (self.0 >> 32) as u32
            }
        }
    };
}

pub(crate) use slot_id;
