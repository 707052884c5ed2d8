//! Shell pattern matching (`case`, `${x#pat}`) and pathname expansion.

use crate::io;

/// One character of a pattern; quoted characters always match themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PChar {
    pub c: u8,
    pub quoted: bool,
}

/// Whether the pattern has an unquoted `*`, `?` or `[`.
pub fn has_meta(p: &[PChar]) -> bool {
    p.iter()
        .any(|pc| !pc.quoted && matches!(pc.c, b'*' | b'?' | b'['))
}

fn class_matches(name: &[u8], c: u8) -> Option<bool> {
    Some(match name {
        b"alpha" => c.is_ascii_alphabetic(),
        b"digit" => c.is_ascii_digit(),
        b"alnum" => c.is_ascii_alphanumeric(),
        b"upper" => c.is_ascii_uppercase(),
        b"lower" => c.is_ascii_lowercase(),
        b"space" => matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c),
        b"blank" => matches!(c, b' ' | b'\t'),
        b"punct" => c.is_ascii_punctuation(),
        b"print" => (0x20..0x7f).contains(&c),
        b"graph" => c.is_ascii_graphic(),
        b"cntrl" => c.is_ascii_control(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// Matches a bracket expression starting at `p[0] == '['` against `c`; returns whether it
/// matched and the pattern length consumed, or `None` when the bracket is not closed (then
/// `[` is an ordinary character).
fn bracket(p: &[PChar], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(pc) if !pc.quoted && pc.c == b'!');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let pc = *p.get(i)?;
        if pc.c == b']' && !pc.quoted && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pc.c == b'[' && !pc.quoted && matches!(p.get(i + 1), Some(n) if n.c == b':' && !n.quoted)
        {
            let rest = p.get(i + 2..)?;
            if let Some(end) = rest
                .windows(2)
                .position(|w| w[0].c == b':' && !w[0].quoted && w[1].c == b']' && !w[1].quoted)
            {
                let name: Vec<u8> = rest.get(..end)?.iter().map(|pc| pc.c).collect();
                if let Some(m) = class_matches(&name, c) {
                    matched |= m;
                    i += 2 + end + 2;
                    continue;
                }
            }
        }
        let lo = pc.c;
        if matches!(p.get(i + 1), Some(d) if d.c == b'-' && !d.quoted)
            && matches!(p.get(i + 2), Some(hi) if hi.c != b']' || hi.quoted)
        {
            let hi = p.get(i + 2)?.c;
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// Whether the whole of `s` matches `p`.
pub fn matches(p: &[PChar], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(pc) = p.get(pi) {
            if !pc.quoted && pc.c == b'*' {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            if let Some(&c) = s.get(si) {
                let step = if pc.quoted {
                    (pc.c == c).then_some(1)
                } else {
                    match pc.c {
                        b'?' => Some(1),
                        b'[' => match bracket(&p[pi..], c) {
                            Some((true, n)) => Some(n),
                            Some((false, _)) => None,
                            None => (c == b'[').then_some(1),
                        },
                        other => (other == c).then_some(1),
                    }
                };
                if let Some(n) = step {
                    pi += n;
                    si += 1;
                    continue;
                }
            }
        } else if si == s.len() {
            return true;
        }
        match star {
            Some((sp, ss)) if ss < s.len() => {
                star = Some((sp, ss + 1));
                pi = sp + 1;
                si = ss + 1;
            }
            _ => return false,
        }
    }
}

/// Pathname expansion: the sorted matching paths, or an empty list when nothing matches.
pub fn glob(p: &[PChar]) -> Vec<Vec<u8>> {
    let mut comps: Vec<&[PChar]> = p.split(|pc| pc.c == b'/').collect();
    let absolute = p.first().is_some_and(|pc| pc.c == b'/');
    let mut bases: Vec<Vec<u8>> = vec![if absolute { b"/".to_vec() } else { Vec::new() }];
    if absolute {
        comps.remove(0);
    }
    let last = comps.len().saturating_sub(1);
    for (ci, comp) in comps.iter().enumerate() {
        let mut next = Vec::new();
        if comp.is_empty() {
            for mut b in bases {
                if !b.is_empty() && !b.ends_with(b"/") {
                    b.push(b'/');
                }
                next.push(b);
            }
            bases = next;
            continue;
        }
        if !has_meta(comp) {
            let name: Vec<u8> = comp.iter().map(|pc| pc.c).collect();
            for b in bases {
                let mut path = b;
                if !path.is_empty() && !path.ends_with(b"/") {
                    path.push(b'/');
                }
                path.extend_from_slice(&name);
                if ci == last {
                    if std::fs::symlink_metadata(io::path(&path)).is_ok() {
                        next.push(path);
                    }
                } else {
                    next.push(path);
                }
            }
            bases = next;
            continue;
        }
        let hidden_ok = comp.first().is_some_and(|pc| pc.c == b'.');
        for b in bases {
            let dir: &[u8] = if b.is_empty() { b"." } else { &b };
            let Ok(rd) = std::fs::read_dir(io::path(dir)) else {
                continue;
            };
            let dots = [b".".to_vec(), b"..".to_vec()];
            let mut names: Vec<Vec<u8>> = rd
                .filter_map(Result::ok)
                .map(|e| io::into_bytes(e.file_name()))
                .chain(dots.into_iter().filter(|_| hidden_ok))
                .filter(|n| (hidden_ok || !n.starts_with(b".")) && matches(comp, n))
                .collect();
            names.sort();
            for n in names {
                let mut path = b.clone();
                if !path.is_empty() && !path.ends_with(b"/") {
                    path.push(b'/');
                }
                path.extend_from_slice(&n);
                if ci != last {
                    let is_dir = std::fs::metadata(io::path(&path)).is_ok_and(|m| m.is_dir());
                    if !is_dir {
                        continue;
                    }
                }
                next.push(path);
            }
        }
        bases = next;
    }
    bases.sort();
    bases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Vec<PChar> {
        s.bytes().map(|c| PChar { c, quoted: false }).collect()
    }

    #[test]
    fn matching() {
        assert!(matches(&pat("*.rs"), b"main.rs"));
        assert!(!matches(&pat("*.rs"), b"main.c"));
        assert!(matches(&pat("a?c"), b"abc"));
        assert!(matches(&pat("[a-c]x"), b"bx"));
        assert!(matches(&pat("[!a-c]x"), b"dx"));
        assert!(matches(&pat("[[:digit:]]*"), b"1abc"));
        assert!(matches(&pat("[]]"), b"]"));
        assert!(matches(&pat("["), b"["));
        assert!(matches(&pat("*"), b""));
        assert!(!matches(
            &[PChar {
                c: b'*',
                quoted: true
            }],
            b"x"
        ));
        assert!(matches(&pat("a*b*c"), b"aXbYc"));
    }
}
