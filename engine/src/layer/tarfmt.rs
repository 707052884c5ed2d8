//! The bytes of a tar header: ustar field layout, numbers, checksums and PAX records.
//!
//! Shared by the writer (which emits POSIX ustar headers plus PAX extended headers, like Go's
//! `archive/tar` in PAX mode) and the reader (which also accepts GNU and V7 headers).

use super::Malformed;

/// Tar block size.
pub(crate) const BLOCK: usize = 512;

/// A header field: offset and length inside the 512-byte block.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    pub(crate) off: usize,
    pub(crate) len: usize,
    pub(crate) name: &'static str,
}

const fn field(off: usize, len: usize, name: &'static str) -> Field {
    Field { off, len, name }
}

pub(crate) const NAME: Field = field(0, 100, "name");
pub(crate) const MODE: Field = field(100, 8, "mode");
pub(crate) const UID: Field = field(108, 8, "uid");
pub(crate) const GID: Field = field(116, 8, "gid");
pub(crate) const SIZE: Field = field(124, 12, "size");
pub(crate) const MTIME: Field = field(136, 12, "mtime");
pub(crate) const CHKSUM: Field = field(148, 8, "chksum");
pub(crate) const TYPEFLAG: usize = 156;
pub(crate) const LINKNAME: Field = field(157, 100, "linkname");
pub(crate) const MAGIC: Field = field(257, 8, "magic");
pub(crate) const DEVMAJOR: Field = field(329, 8, "devmajor");
pub(crate) const DEVMINOR: Field = field(337, 8, "devminor");
pub(crate) const PREFIX: Field = field(345, 155, "prefix");

/// POSIX ustar magic and version.
pub(crate) const USTAR_MAGIC: &[u8; 8] = b"ustar\x0000";

/// Entry type flags.
pub(crate) mod flag {
    pub(crate) const REGULAR: u8 = b'0';
    pub(crate) const REGULAR_OLD: u8 = b'\0';
    pub(crate) const HARDLINK: u8 = b'1';
    pub(crate) const SYMLINK: u8 = b'2';
    pub(crate) const CHAR: u8 = b'3';
    pub(crate) const BLOCK: u8 = b'4';
    pub(crate) const DIR: u8 = b'5';
    pub(crate) const FIFO: u8 = b'6';
    pub(crate) const CONTIGUOUS: u8 = b'7';
    pub(crate) const PAX: u8 = b'x';
    pub(crate) const PAX_GLOBAL: u8 = b'g';
    pub(crate) const GNU_LONGNAME: u8 = b'L';
    pub(crate) const GNU_LONGLINK: u8 = b'K';
    pub(crate) const GNU_SPARSE: u8 = b'S';
}

/// Bytes of padding after `size` bytes of data.
pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A header block under construction.
pub(crate) struct HeaderBlock(pub(crate) [u8; BLOCK]);

impl HeaderBlock {
    /// An empty POSIX ustar header.
    pub(crate) fn ustar() -> Self {
        let mut b = [0u8; BLOCK];
        b[MAGIC.off..MAGIC.off + MAGIC.len].copy_from_slice(USTAR_MAGIC);
        Self(b)
    }

    /// Copies `bytes` into `f`, truncating to the field.
    pub(crate) fn set_bytes(&mut self, f: Field, bytes: &[u8]) {
        let n = bytes.len().min(f.len);
        self.0[f.off..f.off + n].copy_from_slice(&bytes[..n]);
    }

    /// Writes `value` as zero-padded octal with a NUL terminator; false if it does not fit.
    pub(crate) fn set_octal(&mut self, f: Field, value: u64) -> bool {
        let digits = f.len - 1;
        if digits < 22 && value >> (3 * digits) != 0 {
            return false;
        }
        let mut v = value;
        for i in (0..digits).rev() {
            self.0[f.off + i] = b'0' + (v & 7) as u8;
            v >>= 3;
        }
        self.0[f.off + digits] = 0;
        true
    }

    /// Sets the type flag.
    pub(crate) fn set_type(&mut self, t: u8) {
        self.0[TYPEFLAG] = t;
    }

    /// Computes and stores the checksum (`%06o\0 `, as GNU tar and Go write it).
    pub(crate) fn finish(&mut self) {
        self.0[CHKSUM.off..CHKSUM.off + CHKSUM.len].fill(b' ');
        let sum = byte_sum(&self.0);
        self.set_octal(field(CHKSUM.off, 7, "chksum"), sum);
        self.0[CHKSUM.off + 7] = b' ';
    }
}

/// The sum of a block's bytes, eight at a time: this runs once per header, and a byte-wise
/// iterator chain is slow enough in unoptimised builds to dominate archives of tiny entries.
fn byte_sum(block: &[u8; BLOCK]) -> u64 {
    const LANES: u64 = 0x00ff_00ff_00ff_00ff;
    let mut acc = 0u64;
    let mut i = 0;
    while i < BLOCK {
        let mut word = [0u8; 8];
        word.copy_from_slice(&block[i..i + 8]);
        let x = u64::from_le_bytes(word);
        // Four 16-bit lanes, each at most 64 * 510: no carries between lanes.
        acc += (x & LANES) + ((x >> 8) & LANES);
        i += 8;
    }
    (acc & 0xffff) + ((acc >> 16) & 0xffff) + ((acc >> 32) & 0xffff) + (acc >> 48)
}

/// Whether the checksum field matches the block (unsigned or, for old tars, signed sum).
pub(crate) fn checksum_ok(block: &[u8; BLOCK]) -> Result<bool, Malformed> {
    let field = field_bytes(block, CHKSUM);
    let stored = parse_unsigned(field, CHKSUM)?;
    let in_field: u64 = field.iter().map(|&b| u64::from(b)).sum();
    let unsigned = byte_sum(block) - in_field + 8 * u64::from(b' ');
    if stored == unsigned {
        return Ok(true);
    }
    let mut signed: i64 = 8 * i64::from(b' ');
    for (i, &b) in block.iter().enumerate() {
        if !(CHKSUM.off..CHKSUM.off + CHKSUM.len).contains(&i) {
            signed += i64::from(b as i8);
        }
    }
    Ok(i64::try_from(stored).is_ok_and(|s| s == signed))
}

/// The raw bytes of field `f`.
pub(crate) fn field_bytes(block: &[u8; BLOCK], f: Field) -> &[u8] {
    &block[f.off..f.off + f.len]
}

/// A string field up to its first NUL.
pub(crate) fn field_str(block: &[u8; BLOCK], f: Field) -> &[u8] {
    let raw = field_bytes(block, f);
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    &raw[..end]
}

/// Parses a numeric field: octal text (space/NUL padded) or GNU base-256.
pub(crate) fn parse_signed(raw: &[u8], f: Field) -> Result<i64, Malformed> {
    let bad = || Malformed::Number(f.name);
    if let Some((&first, rest)) = raw.split_first() {
        if first & 0x80 != 0 {
            // Base-256: the remaining 7 bits of the first byte and all later bytes, big-endian,
            // two's complement when bit 6 of the first byte is set.
            let negative = first & 0x40 != 0;
            let flip = if negative { 0xffu8 } else { 0 };
            let mut v: u64 = u64::from((first ^ flip) & 0x7f);
            for &b in rest {
                v = v.checked_mul(256).ok_or_else(bad)? | u64::from(b ^ flip);
            }
            let v = i64::try_from(v).map_err(|_| bad())?;
            return Ok(if negative { -v - 1 } else { v });
        }
    }
    let trimmed = trim(raw);
    let mut v: i64 = 0;
    for &b in trimmed {
        if !matches!(b, b'0'..=b'7') {
            return Err(bad());
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(v)
}

/// Parses a numeric field that must not be negative.
pub(crate) fn parse_unsigned(raw: &[u8], f: Field) -> Result<u64, Malformed> {
    u64::try_from(parse_signed(raw, f)?).map_err(|_| Malformed::Number(f.name))
}

/// Strips leading and trailing spaces and NULs.
fn trim(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(start, |e| e + 1);
    &raw[start..end]
}

/// Appends one PAX record, `"<len> <key>=<value>\n"` where `<len>` counts the whole record.
pub(crate) fn push_pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + decimal_digits(len) {
        len = rest + decimal_digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn decimal_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Iterates over the `(key, value)` records of a PAX extended header.
pub(crate) struct PaxRecords<'a> {
    rest: &'a [u8],
}

impl<'a> PaxRecords<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }
}

impl<'a> Iterator for PaxRecords<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        // Some writers pad the data with NULs; stop there.
        if self.rest.is_empty() || self.rest[0] == 0 {
            return None;
        }
        let record = (|| {
            let space = self.rest.iter().position(|&b| b == b' ')?;
            let digits = &self.rest[..space];
            if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
            if len <= space + 1 || len > self.rest.len() || self.rest[len - 1] != b'\n' {
                return None;
            }
            let body = &self.rest[space + 1..len - 1];
            let eq = body.iter().position(|&b| b == b'=')?;
            let kv = (&body[..eq], &body[eq + 1..]);
            self.rest = &self.rest[len..];
            Some(kv)
        })();
        match record {
            Some(kv) => Some(Ok(kv)),
            None => {
                self.rest = &[];
                Some(Err(Malformed::PaxRecord))
            }
        }
    }
}

/// Parses a PAX decimal integer.
pub(crate) fn pax_u64(value: &[u8], key: &'static str) -> Result<u64, Malformed> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed::PaxValue(key))
}

/// Parses a PAX time, `[-]seconds[.fraction]`, into seconds and nanoseconds.
pub(crate) fn pax_time(value: &[u8]) -> Result<(i64, u32), Malformed> {
    let bad = || Malformed::PaxValue("mtime");
    let (negative, digits) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    let (whole, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &[][..]),
    };
    if whole.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let secs = i64::try_from(pax_u64(whole, "mtime")?).map_err(|_| bad())?;
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    Ok(match (negative, nanos) {
        (false, n) => (secs, n),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        push_pax_record(&mut v, b"path", b"a");
        assert_eq!(v, b"9 path=a\n");
        v.clear();
        // The classic edge: 98 bytes plus two digits is 100, which needs three.
        push_pax_record(&mut v, b"path", &[b'x'; 90]);
        assert_eq!((&v[..3], v.len()), (&b"99 "[..], 99));
        v.clear();
        push_pax_record(&mut v, b"path", &[b'x'; 91]);
        assert_eq!((&v[..4], v.len()), (&b"101 "[..], 101));
        let recs: Vec<_> = PaxRecords::new(&v).collect::<Result<_, _>>().unwrap();
        assert_eq!(recs, vec![(&b"path"[..], &[b'x'; 91][..])]);
    }

    #[test]
    fn pax_records_reject_garbage() {
        for bad in [
            &b"5 a=b\n"[..],
            b"x path=a\n",
            b"100 path=a\n",
            b"9 patha\n\n",
        ] {
            assert!(PaxRecords::new(bad).any(|r| r.is_err()), "{bad:?}");
        }
    }

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(parse_signed(b"0000755\0", MODE), Ok(0o755));
        assert_eq!(parse_signed(b"   755 \0", MODE), Ok(0o755));
        assert_eq!(parse_signed(b"\0\0\0\0\0\0\0\0", MODE), Ok(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 2;
        assert_eq!(parse_signed(&big, SIZE), Ok(2 << 32));
        let neg = [0xffu8; 12];
        assert_eq!(parse_signed(&neg, MTIME), Ok(-1));
        assert!(parse_unsigned(&neg, SIZE).is_err());
        assert!(parse_signed(b"0000789\0", MODE).is_err());
    }

    #[test]
    fn octal_fields_round_trip_and_overflow() {
        let mut h = HeaderBlock::ustar();
        assert!(h.set_octal(SIZE, 8 * 1024 * 1024 * 1024 - 1));
        assert!(!h.set_octal(SIZE, 8 * 1024 * 1024 * 1024));
        assert!(h.set_octal(UID, 0o7777777));
        assert!(!h.set_octal(UID, 0o10000000));
        h.finish();
        assert_eq!(checksum_ok(&h.0), Ok(true));
    }

    #[test]
    fn checksums_unsigned_and_signed() {
        let mut b = [0u8; BLOCK];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i * 37 % 256) as u8;
        }
        assert_eq!(byte_sum(&b), b.iter().map(|&x| u64::from(x)).sum::<u64>());
        assert_eq!(byte_sum(&[0xff; BLOCK]), 255 * 512);
        let mut full = HeaderBlock([0xff; BLOCK]);
        full.finish();
        assert_eq!(checksum_ok(&full.0), Ok(true));
        full.0[0] = b'x';
        assert_eq!(checksum_ok(&full.0), Ok(false));
        // Old tars summed signed bytes: 0xe9 counts as -23.
        let mut old = HeaderBlock([0u8; BLOCK]);
        old.0[0] = 0xe9;
        old.set_octal(field(CHKSUM.off, 7, "chksum"), 8 * 32 - 23);
        assert_eq!(checksum_ok(&old.0), Ok(true));
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(b"1700000000"), Ok((1_700_000_000, 0)));
        assert_eq!(pax_time(b"1.5"), Ok((1, 500_000_000)));
        assert_eq!(pax_time(b"-1.25"), Ok((-2, 750_000_000)));
        assert!(pax_time(b"1.x").is_err());
        assert!(pax_time(b"").is_err());
    }
}
