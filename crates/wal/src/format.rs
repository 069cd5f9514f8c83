//! The bytes on disk: the file header, the record frame, and the scan that
//! reads frames back and classifies damage.
//!
//! All integers are little-endian. A log file is a [`HEADER_LEN`]-byte header
//! followed by frames, back to back, with no padding:
//!
//! ```text
//! header (24 bytes)
//!   0..8    magic            b"TIFFWAL\0"
//!   8..10   format version   u16, 1
//!   10..12  reserved         u16, 0
//!   12..20  salt             u64, new for every file the log writes
//!   20..24  header checksum  crc32c of bytes 0..20
//!
//! frame, format version 1 (20 bytes + body)
//!   0..4    checksum         crc32c of: salt, frame offset (u64 each), bytes 4..20, body
//!   4..8    body length      u32, at most the reader's maximum record size
//!   8..10   record version   u16, 1 or more (0 is never written: it marks zeroed space)
//!   10..12  flags            u16, 0 in format version 1
//!   12..20  durable mark     u64, how far the file was durable when this frame was written
//!   20..    body             opaque bytes
//! ```

use std::ops::Range;

use crate::Record;

/// The first eight bytes of every log file.
pub const MAGIC: [u8; 8] = *b"TIFFWAL\0";
/// The frame format this crate writes. Readers dispatch on the header's version.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the file header in bytes.
pub const HEADER_LEN: u64 = 24;
/// Size of a version-1 frame header in bytes (the body follows it).
pub const FRAME_HEADER_LEN: u64 = 20;
/// The largest body the format can describe; [`crate::Options::max_record_size`]
/// may only lower it.
pub const MAX_RECORD_SIZE: u32 = 1 << 30;

/// What a file header says, or why it cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// A valid header of a format this crate reads.
    Valid { salt: u64 },
    /// The file does not start with [`MAGIC`].
    NotAWal,
    /// The magic is right but the checksum is not.
    Corrupt,
    /// A valid header of a format version this crate does not read.
    Unsupported { version: u16 },
}

/// Encodes a file header for `salt`.
pub(crate) fn encode_header(salt: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads a file header from the start of `data` (which holds the whole file).
pub(crate) fn decode_header(data: &[u8]) -> Header {
    if data.len() < HEADER_LEN as usize || data[0..8] != MAGIC {
        return Header::NotAWal;
    }
    if crc32c::crc32c(&data[0..20]) != u32_at(data, 20) {
        return Header::Corrupt;
    }
    let version = u16_at(data, 8);
    if version != FORMAT_VERSION || u16_at(data, 10) != 0 {
        return Header::Unsupported { version };
    }
    Header::Valid {
        salt: u64_at(data, 12),
    }
}

/// Appends one version-1 frame to `out`. `offset` is the file offset the frame
/// will be written at, `durable` how far the file is known to be durable.
/// The caller has checked `body.len()` against the maximum record size.
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    salt: u64,
    offset: u64,
    durable: u64,
    version: u16,
    body: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&durable.to_le_bytes());
    out.extend_from_slice(body);
    let crc = frame_checksum(salt, offset, &out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum of a frame: its salt and offset, then its bytes after the checksum field.
fn frame_checksum(salt: u64, offset: u64, rest: &[u8]) -> u32 {
    let mut seed = [0u8; 16];
    seed[0..8].copy_from_slice(&salt.to_le_bytes());
    seed[8..16].copy_from_slice(&offset.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&seed), rest)
}

/// A frame that checked out: where its body is and what its header says.
struct Frame {
    version: u16,
    durable: u64,
    body: Range<usize>,
}

/// The body length of a frame header at `offset` that passes the cheap
/// checks (version, flags, length within bounds and within the file), so
/// that scanning garbage or zeros costs no checksums.
fn plausible(data: &[u8], offset: usize, max_len: u32) -> Option<usize> {
    let head = data.get(offset..offset.checked_add(FRAME_HEADER_LEN as usize)?)?;
    let len = u32_at(head, 4);
    if u16_at(head, 8) == 0 || u16_at(head, 10) != 0 || len > max_len {
        return None;
    }
    let end = (offset + FRAME_HEADER_LEN as usize).checked_add(len as usize)?;
    (end <= data.len()).then_some(len as usize)
}

/// Decodes the frame at `offset` of `data` (the whole file), or `None` if
/// there is no valid frame there.
fn decode_frame(data: &[u8], offset: usize, salt: u64, max_len: u32) -> Option<Frame> {
    let len = plausible(data, offset, max_len)?;
    let body_start = offset + FRAME_HEADER_LEN as usize;
    let end = body_start + len;
    if frame_checksum(salt, offset as u64, &data[offset + 4..end]) != u32_at(data, offset) {
        return None;
    }
    Some(Frame {
        version: u16_at(data, offset + 8),
        durable: u64_at(data, offset + 12),
        body: body_start..end,
    })
}

/// What a scan found after the last good frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Where the first bad frame starts: everything from here on is not replayed.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub bytes: u64,
    /// Intact frames found after the damage (they are dropped with it).
    pub frames_after: u64,
    /// The first intact frame after the damage, if any.
    pub next_valid: Option<u64>,
    /// Whether an intact frame after the damage says the damaged bytes had
    /// been made durable before it was written: corruption in the middle of
    /// the log, not a torn tail. Also set, to be safe, when the search for
    /// intact frames ran out of its budget (only a crafted file does that).
    pub mid_log: bool,
}

/// The result of reading every frame of a file.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The records of the intact frames before any damage, in order.
    pub records: Vec<Record>,
    /// Where the intact frames end.
    pub end: u64,
    /// What follows them, if anything.
    pub damage: Option<Damage>,
}

/// Reads every frame of `data` (the whole file, header included) written with `salt`.
///
/// Frames are read in order until one does not check out. The rest of the
/// file is then searched, byte by byte, for intact frames: any whose durable
/// mark lies beyond the bad frame proves that the bad bytes had been synced,
/// so the damage is corruption in the middle of the log. Intact frames whose
/// marks do not reach it were written in the same unsynced stretch as the bad
/// frame: a torn tail.
pub(crate) fn scan(data: &[u8], salt: u64, max_len: u32) -> Scan {
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    while let Some(frame) = decode_frame(data, at, salt, max_len) {
        records.push(Record {
            version: frame.version,
            offset: at as u64,
            body: data[frame.body.clone()].to_vec(),
        });
        at = frame.body.end;
    }
    let end = at as u64;
    if at >= data.len() {
        return Scan {
            records,
            end,
            damage: None,
        };
    }
    let mut damage = Damage {
        offset: end,
        bytes: data.len() as u64 - end,
        frames_after: 0,
        next_valid: None,
        mid_log: false,
    };
    // Bytes the search may checksum: a file crafted to hold many plausible
    // headers with long lengths must not make the search quadratic.
    let mut budget = data.len().saturating_mul(4).saturating_add(1 << 20);
    let mut probe = at + 1;
    while probe + FRAME_HEADER_LEN as usize <= data.len() {
        let Some(len) = plausible(data, probe, max_len) else {
            probe += 1;
            continue;
        };
        if len > budget {
            // Not searched to the end: assume the worst, corruption.
            damage.mid_log = true;
            break;
        }
        budget -= len;
        match decode_frame(data, probe, salt, max_len) {
            Some(frame) => {
                damage.frames_after += 1;
                damage.next_valid.get_or_insert(probe as u64);
                damage.mid_log |= frame.durable > end;
                probe = frame.body.end;
            }
            None => probe += 1,
        }
    }
    Scan {
        records,
        end,
        damage: Some(damage),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(salt: u64, bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = encode_header(salt).to_vec();
        for body in bodies {
            let offset = out.len() as u64;
            encode_frame(&mut out, salt, offset, offset, 1, body);
        }
        out
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(42);
        assert_eq!(decode_header(&h), Header::Valid { salt: 42 });
        let mut bad = h;
        bad[13] ^= 1;
        assert_eq!(decode_header(&bad), Header::Corrupt);
        assert_eq!(decode_header(b"not a log at all, no sir"), Header::NotAWal);
        assert_eq!(decode_header(&h[..10]), Header::NotAWal);
    }

    #[test]
    fn frames_round_trip() {
        let data = log(7, &[b"one", b"", b"three"]);
        let scan = scan(&data, 7, 1 << 20);
        assert_eq!(scan.damage, None);
        let bodies: Vec<&[u8]> = scan.records.iter().map(|r| &r.body[..]).collect();
        assert_eq!(bodies, [&b"one"[..], b"", b"three"]);
        assert_eq!(scan.end, data.len() as u64);
    }

    #[test]
    fn another_salt_reads_nothing() {
        let data = log(7, &[b"one"]);
        let scan = scan(&data, 8, 1 << 20);
        assert!(scan.records.is_empty());
        assert!(!scan.damage.unwrap().mid_log);
    }

    #[test]
    fn a_crafted_file_cannot_make_the_search_quadratic() {
        // After one bad frame, a plausible header every 20 bytes, each
        // claiming a body that reaches almost to the end of the file: a full
        // search would checksum about 200,000 times 2 MB.
        let mut data = log(7, &[b"good"]);
        let bad = data.len();
        data.resize(4 << 20, 0xAA);
        for at in (bad..data.len() - 20).step_by(20) {
            let len = (data.len() - at - 20) as u32;
            data[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
            data[at + 8..at + 10].copy_from_slice(&1u16.to_le_bytes());
            data[at + 10..at + 12].copy_from_slice(&0u16.to_le_bytes());
        }
        let scan = scan(&data, 7, MAX_RECORD_SIZE);
        assert_eq!(scan.records.len(), 1);
        let damage = scan.damage.unwrap();
        assert_eq!(damage.offset, bad as u64);
        assert!(damage.mid_log, "an unfinished search assumes corruption");
    }

    #[test]
    fn a_frame_moved_elsewhere_is_invalid() {
        let mut data = log(7, &[b"aaaa", b"bbbb"]);
        let frame_len = (FRAME_HEADER_LEN + 4) as usize;
        let first = data[HEADER_LEN as usize..][..frame_len].to_vec();
        data[HEADER_LEN as usize + frame_len..].copy_from_slice(&first);
        let scan = scan(&data, 7, 1 << 20);
        assert_eq!(scan.records.len(), 1);
    }
}
