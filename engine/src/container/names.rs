//! Generated container names, docker style: `adjective_surname` of a scientist or engineer.

use std::io::Read;

const ADJECTIVES: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "awesome",
    "blissful",
    "bold",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "confident",
    "cool",
    "dazzling",
    "determined",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elegant",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "focused",
    "friendly",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "happy",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "relaxed",
    "reverent",
    "romantic",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "upbeat",
    "vibrant",
    "vigilant",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
];

const NAMES: &[&str] = &[
    "agnesi",
    "albattani",
    "allen",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bell",
    "bhabha",
    "blackwell",
    "bohr",
    "boole",
    "borg",
    "bose",
    "brahmagupta",
    "brattain",
    "cannon",
    "carson",
    "cerf",
    "chandrasekhar",
    "clarke",
    "curie",
    "darwin",
    "diffie",
    "dijkstra",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hopper",
    "hypatia",
    "jennings",
    "johnson",
    "kepler",
    "knuth",
    "kowalevski",
    "lamarr",
    "lamport",
    "leakey",
    "liskov",
    "lovelace",
    "lumiere",
    "mahavira",
    "mayer",
    "mccarthy",
    "meitner",
    "mendel",
    "minsky",
    "morse",
    "newton",
    "nobel",
    "noether",
    "pare",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "ramanujan",
    "ride",
    "ritchie",
    "rosalind",
    "shannon",
    "shaw",
    "sinoussi",
    "stallman",
    "swartz",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "yalow",
    "zhukovsky",
];

fn random() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        return t as u64 ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(b)
}

/// A name that `taken` says is free.
pub(crate) fn generate(taken: impl Fn(&str) -> bool) -> String {
    let mut attempt = 0u32;
    loop {
        let r = random();
        let a = ADJECTIVES[(r % ADJECTIVES.len() as u64) as usize];
        let n = NAMES[((r >> 32) % NAMES.len() as u64) as usize];
        let name = if attempt < 10 {
            format!("{a}_{n}")
        } else {
            format!("{a}_{n}{}", r % 10)
        };
        if !taken(&name) {
            return name;
        }
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_docker_style_and_free() {
        let n = super::generate(|n| n.starts_with('a'));
        assert!(!n.starts_with('a'));
        let (adj, name) = n.split_once('_').unwrap();
        assert!(super::ADJECTIVES.contains(&adj));
        assert!(super::NAMES.iter().any(|s| name.starts_with(s)));
    }
}
