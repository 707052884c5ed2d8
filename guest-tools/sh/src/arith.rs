//! `$((...))`: dash's arithmetic (C integer operators on `intmax_t`, no `++`/`--`/`**`).

/// What arithmetic needs from the shell.
pub trait ArithVars {
    fn get(&self, name: &[u8]) -> Option<Vec<u8>>;
    /// Assigns; `Err` carries the message when the variable is readonly.
    fn set(&mut self, name: &[u8], value: i64) -> Result<(), String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArithError {
    /// `arithmetic expression: MSG: "EXPR"`.
    Syntax(&'static str),
    /// A variable whose value is not a number: `Illegal number: VALUE`.
    IllegalNumber(Vec<u8>),
    /// A message printed as is (readonly variable).
    Other(String),
}

/// Parses an integer like `strtoimax(s, 0)` with the whole string consumed: decimal, `0`
/// octal, `0x` hex, optional sign and surrounding blanks.
pub fn parse_number(s: &[u8]) -> Option<i64> {
    let t = s.trim_ascii();
    let (neg, digits) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, body) =
        if digits.len() > 1 && (digits.starts_with(b"0x") || digits.starts_with(b"0X")) {
            (16, &digits[2..])
        } else if digits.len() > 1 && digits[0] == b'0' {
            (8, &digits[1..])
        } else {
            (10, digits)
        };
    if body.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &c in body {
        let d = char::from(c).to_digit(radix)?;
        v = v.wrapping_mul(i64::from(radix)).wrapping_add(i64::from(d));
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(i64),
    Name(Vec<u8>),
    Op(&'static str),
    End,
}

const OPS: &[&str] = &[
    "<<=", ">>=", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "*=", "/=", "%=", "+=", "-=",
    "&=", "^=", "|=", "+", "-", "*", "/", "%", "<", ">", "=", "&", "^", "|", "!", "~", "?", ":",
    "(", ")",
];

struct Eval<'a> {
    s: &'a [u8],
    pos: usize,
    tok: Tok,
    vars: &'a mut dyn ArithVars,
}

type R<T> = Result<T, ArithError>;

impl Eval<'_> {
    fn lex(&mut self) -> R<()> {
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
        let Some(&c) = self.s.get(self.pos) else {
            self.tok = Tok::End;
            return Ok(());
        };
        if c.is_ascii_digit() {
            let start = self.pos;
            while self
                .s
                .get(self.pos)
                .is_some_and(|c| c.is_ascii_alphanumeric())
            {
                self.pos += 1;
            }
            let text = self.s.get(start..self.pos).unwrap_or(&[]);
            let n = parse_number(text).ok_or(ArithError::Syntax("expecting EOF"))?;
            self.tok = Tok::Num(n);
            return Ok(());
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = self.pos;
            while self
                .s
                .get(self.pos)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            {
                self.pos += 1;
            }
            self.tok = Tok::Name(self.s.get(start..self.pos).unwrap_or(&[]).to_vec());
            return Ok(());
        }
        for op in OPS {
            if self
                .s
                .get(self.pos..)
                .is_some_and(|r| r.starts_with(op.as_bytes()))
            {
                self.pos += op.len();
                self.tok = Tok::Op(op);
                return Ok(());
            }
        }
        Err(ArithError::Syntax("expecting primary"))
    }

    fn var(&self, name: &[u8]) -> R<i64> {
        match self.vars.get(name) {
            None => Ok(0),
            Some(v) if v.is_empty() => Ok(0),
            Some(v) => parse_number(&v).ok_or(ArithError::IllegalNumber(v)),
        }
    }

    fn assign(&mut self, noeval: bool) -> R<i64> {
        if let Tok::Name(name) = self.tok.clone() {
            let save = (self.pos, self.tok.clone());
            self.lex()?;
            if let Tok::Op(op) = self.tok {
                if op.ends_with('=') && !matches!(op, "==" | "!=" | "<=" | ">=") {
                    self.lex()?;
                    let rhs = self.assign(noeval)?;
                    if noeval {
                        return Ok(0);
                    }
                    let value = if op == "=" {
                        rhs
                    } else {
                        let cur = self.var(&name)?;
                        binary(&op[..op.len() - 1], cur, rhs)?
                    };
                    self.vars.set(&name, value).map_err(ArithError::Other)?;
                    return Ok(value);
                }
            }
            self.pos = save.0;
            self.tok = save.1;
        }
        self.ternary(noeval)
    }

    fn ternary(&mut self, noeval: bool) -> R<i64> {
        let cond = self.binary_level(0, noeval)?;
        if self.tok != Tok::Op("?") {
            return Ok(cond);
        }
        self.lex()?;
        let a = self.assign(noeval || cond == 0)?;
        if self.tok != Tok::Op(":") {
            return Err(ArithError::Syntax("expecting ':'"));
        }
        self.lex()?;
        let b = self.ternary(noeval || cond != 0)?;
        Ok(if cond != 0 { a } else { b })
    }

    fn binary_level(&mut self, level: usize, noeval: bool) -> R<i64> {
        const LEVELS: &[&[&str]] = &[
            &["||"],
            &["&&"],
            &["|"],
            &["^"],
            &["&"],
            &["==", "!="],
            &["<", "<=", ">", ">="],
            &["<<", ">>"],
            &["+", "-"],
            &["*", "/", "%"],
        ];
        let Some(ops) = LEVELS.get(level) else {
            return self.unary(noeval);
        };
        let mut lhs = self.binary_level(level + 1, noeval)?;
        loop {
            let Tok::Op(op) = self.tok else {
                return Ok(lhs);
            };
            if !ops.contains(&op) {
                return Ok(lhs);
            }
            self.lex()?;
            match op {
                "||" => {
                    let rhs = self.binary_level(level + 1, noeval || lhs != 0)?;
                    lhs = i64::from(lhs != 0 || rhs != 0);
                }
                "&&" => {
                    let rhs = self.binary_level(level + 1, noeval || lhs == 0)?;
                    lhs = i64::from(lhs != 0 && rhs != 0);
                }
                _ => {
                    let rhs = self.binary_level(level + 1, noeval)?;
                    lhs = if noeval { 0 } else { binary(op, lhs, rhs)? };
                }
            }
        }
    }

    fn unary(&mut self, noeval: bool) -> R<i64> {
        match self.tok.clone() {
            Tok::Op(op @ ("+" | "-" | "!" | "~")) => {
                self.lex()?;
                let v = self.unary(noeval)?;
                Ok(match op {
                    "-" => v.wrapping_neg(),
                    "!" => i64::from(v == 0),
                    "~" => !v,
                    _ => v,
                })
            }
            Tok::Op("(") => {
                self.lex()?;
                let v = self.assign(noeval)?;
                if self.tok != Tok::Op(")") {
                    return Err(ArithError::Syntax("expecting ')'"));
                }
                self.lex()?;
                Ok(v)
            }
            Tok::Num(n) => {
                self.lex()?;
                Ok(n)
            }
            Tok::Name(name) => {
                self.lex()?;
                if noeval {
                    Ok(0)
                } else {
                    self.var(&name)
                }
            }
            _ => Err(ArithError::Syntax("expecting primary")),
        }
    }
}

fn binary(op: &str, a: i64, b: i64) -> R<i64> {
    Ok(match op {
        "|" => a | b,
        "^" => a ^ b,
        "&" => a & b,
        "==" => i64::from(a == b),
        "!=" => i64::from(a != b),
        "<" => i64::from(a < b),
        "<=" => i64::from(a <= b),
        ">" => i64::from(a > b),
        ">=" => i64::from(a >= b),
        "<<" => a.wrapping_shl((b & 63) as u32),
        ">>" => a.wrapping_shr((b & 63) as u32),
        "+" => a.wrapping_add(b),
        "-" => a.wrapping_sub(b),
        "*" => a.wrapping_mul(b),
        "/" | "%" => {
            if b == 0 {
                return Err(ArithError::Syntax("division by zero"));
            }
            if op == "/" {
                a.wrapping_div(b)
            } else {
                a.wrapping_rem(b)
            }
        }
        _ => return Err(ArithError::Syntax("expecting primary")),
    })
}

/// Evaluates an arithmetic expression (already expanded).
pub fn eval(expr: &[u8], vars: &mut dyn ArithVars) -> Result<i64, ArithError> {
    let mut e = Eval {
        s: expr,
        pos: 0,
        tok: Tok::End,
        vars,
    };
    e.lex()?;
    if e.tok == Tok::End {
        return Ok(0);
    }
    let v = e.assign(false)?;
    if e.tok != Tok::End {
        return Err(ArithError::Syntax("expecting EOF"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<Vec<u8>, Vec<u8>>);

    impl ArithVars for Map {
        fn get(&self, name: &[u8]) -> Option<Vec<u8>> {
            self.0.get(name).cloned()
        }
        fn set(&mut self, name: &[u8], value: i64) -> Result<(), String> {
            self.0.insert(name.to_vec(), value.to_string().into_bytes());
            Ok(())
        }
    }

    fn ev(s: &str) -> Result<i64, ArithError> {
        let mut m = Map(HashMap::new());
        m.0.insert(b"x".to_vec(), b"5".to_vec());
        eval(s.as_bytes(), &mut m)
    }

    #[test]
    fn operators() {
        assert_eq!(ev("1 + 2 * 3"), Ok(7));
        assert_eq!(ev("(1 + 2) * 3"), Ok(9));
        assert_eq!(ev("010 + 0x10"), Ok(24));
        assert_eq!(ev("x > 3 ? x : 0"), Ok(5));
        assert_eq!(ev("-x"), Ok(-5));
        assert_eq!(ev("!0 && ~0"), Ok(1));
        assert_eq!(ev("x += 2"), Ok(7));
        assert_eq!(ev("0 && 1/0"), Ok(0));
        assert_eq!(ev("1 << 4"), Ok(16));
        assert_eq!(ev(""), Ok(0));
    }

    #[test]
    fn errors() {
        assert_eq!(ev("1/0"), Err(ArithError::Syntax("division by zero")));
        assert_eq!(ev("1 +"), Err(ArithError::Syntax("expecting primary")));
        assert_eq!(ev("1 2"), Err(ArithError::Syntax("expecting EOF")));
        assert!(ev("x++").is_err());
        assert!(ev("2 ** 3").is_err());
    }
}
