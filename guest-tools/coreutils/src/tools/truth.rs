//! true and false: do nothing, successfully or not. As GNU's, they look at their arguments only
//! for a lone `--help` or `--version`. (uutils' versions build a whole option parser and load
//! their messages first: most of the time a container that runs `true` spent in the guest.)

use std::ffi::OsString;

use crate::util;

const USAGE_TRUE: &str = "true [ignored command line arguments]\n  or:  true OPTION\nExit with a status code indicating success.";
const USAGE_FALSE: &str = "false [ignored command line arguments]\n  or:  false OPTION\nExit with a status code indicating failure.";

pub fn r#true(args: Vec<OsString>) -> i32 {
    util::help_or_version("true", &args, USAGE_TRUE);
    0
}

/// `false --help` fails too, as GNU's does.
pub fn r#false(args: Vec<OsString>) -> i32 {
    util::help_or_version("false", &args, USAGE_FALSE);
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn they_ignore_their_arguments() {
        assert_eq!(r#true(args(&["true", "--bogus", "-x", "--help"])), 0);
        assert_eq!(r#false(args(&["false", "--bogus", "--version", "x"])), 1);
        assert_eq!(r#true(args(&["true"])), 0);
        assert_eq!(r#false(args(&["false"])), 1);
    }

    #[test]
    fn a_lone_help_or_version_keeps_the_status() {
        assert_eq!(r#true(args(&["true", "--help"])), 0);
        assert_eq!(r#false(args(&["false", "--help"])), 1);
        assert_eq!(r#false(args(&["false", "--version"])), 1);
    }
}
