//! Ref patterns: `refs/heads/main`, `refs/tags/v*`, `refs/heads/release/**`.
//!
//! `*` matches any run of characters without `/`, `**` any run including
//! `/`, `?` one character other than `/`; everything else matches itself.
//! The same rules as GitHub's branch and tag patterns for the cases that
//! matter here, and as Gantry's repository patterns.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**`
    Any,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' if chars.peek() == Some(&'*') => {
                    // `**`, and any stars after it, match anything.
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    Token::Any
                }
                '*' => Token::Star,
                '?' => Token::One,
                c => Token::Literal(c),
            });
        }
        Glob { tokens }
    }

    /// Whether the whole of `text` matches. Linear in the length of `text`
    /// for each token of the pattern: no backtracking, whatever the input.
    pub fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let n = chars.len();
        // reach[i]: the tokens so far can match exactly chars[..i].
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; n + 1];
            for i in 0..=n {
                next[i] = match token {
                    Token::Literal(c) => i > 0 && reach[i - 1] && chars[i - 1] == *c,
                    Token::One => i > 0 && reach[i - 1] && chars[i - 1] != '/',
                    Token::Star => reach[i] || (i > 0 && next[i - 1] && chars[i - 1] != '/'),
                    Token::Any => reach[i] || (i > 0 && next[i - 1]),
                };
            }
            if !next.contains(&true) {
                return false;
            }
            reach = next;
        }
        reach[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).matches(text)
    }

    #[test]
    fn literals_match_exactly() {
        assert!(m("refs/heads/main", "refs/heads/main"));
        assert!(!m("refs/heads/main", "refs/heads/main2"));
        assert!(!m("refs/heads/main", "refs/heads/mai"));
        assert!(!m("refs/heads/main", "xrefs/heads/main"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn star_stays_within_a_segment() {
        assert!(m("refs/tags/v*", "refs/tags/v1.2.3"));
        assert!(m("refs/tags/v*", "refs/tags/v"));
        assert!(!m("refs/tags/v*", "refs/tags/v1/evil"));
        assert!(!m("refs/tags/v*", "refs/tags/1.0"));
        assert!(m("refs/heads/*/main", "refs/heads/team/main"));
        assert!(!m("refs/heads/*/main", "refs/heads/a/b/main"));
        assert!(m("refs/tags/v*.*.*", "refs/tags/v1.22.3"));
        assert!(!m("refs/tags/v*.*.*", "refs/tags/v1.22"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(m("refs/heads/release/**", "refs/heads/release/2024/q1"));
        assert!(m("refs/heads/release/**", "refs/heads/release/"));
        assert!(!m("refs/heads/release/**", "refs/heads/releases/x"));
        assert!(m("refs/**", "refs/heads/a/b/c"));
        assert!(m("refs/***", "refs/a/b"));
    }

    #[test]
    fn question_mark_is_one_character_but_not_a_slash() {
        assert!(m("refs/tags/v?", "refs/tags/v1"));
        assert!(m("refs/tags/v?", "refs/tags/vé"));
        assert!(!m("refs/tags/v?", "refs/tags/v12"));
        assert!(!m("refs/tags/v?x", "refs/tags/v/x"));
    }

    #[test]
    fn long_inputs_do_not_backtrack() {
        let text = format!("refs/{}b", "a".repeat(10_000));
        assert!(!m("refs/*a*a*a*a*a*a*a*a*a*a*a*c", &text));
        assert!(m("refs/*a*a*a*a*a*a*a*a*a*a*a*b", &text));
    }
}
