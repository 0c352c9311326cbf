//! Where the `[[clients]]` sections of a configuration are, found by toml's lexer alone: each
//! section is then parsed on its own, so that the parsed form of a whole configuration never
//! exists. toml holds a document's tokens, its parse events and a table per entry at once
//! (about 3 KiB a client: 300 MiB at 100,000 clients), where a section is a few hundred bytes.

use std::ops::Range;

use toml_parser::lexer::TokenKind;

/// The `[[clients]]` sections of a document.
pub(super) struct Sections {
    /// Each section's bytes, its header included, in the order of the file.
    pub(super) clients: Vec<Range<usize>>,
    /// Whether anything but whitespace and comments follows the first section outside the
    /// sections (another table after the clients).
    pub(super) interleaved: bool,
}

/// `None` when `clients` appears at the top level in another form than `[[clients]]` headers (a
/// `clients = [...]` key, a `[clients.x]` table, a quoted name): such a document is parsed
/// whole, as before.
pub(super) fn find(source: &str) -> Option<Sections> {
    let text = |span: toml_parser::Span| &source[span.start()..span.end()];
    let mut tokens = toml_parser::Source::new(source).lex().peekable();
    let mut found = Sections {
        clients: Vec::new(),
        interleaved: false,
    };
    let mut open: Option<usize> = None;
    let mut in_root = true;
    // Brackets and braces open in a value: a line of a multi-line array may start with `[`.
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Eof => break,
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Newline => line_start |= depth == 0,
            TokenKind::LeftSquareBracket if line_start && depth == 0 => {
                // A table header: its name without spaces, up to the end of the line.
                let start = token.span().start();
                let mut name = String::from("[");
                while let Some(t) =
                    tokens.next_if(|t| !matches!(t.kind(), TokenKind::Newline | TokenKind::Eof))
                {
                    if !matches!(t.kind(), TokenKind::Whitespace | TokenKind::Comment) {
                        name.push_str(text(t.span()));
                    }
                }
                if let Some(s) = open.take() {
                    found.clients.push(s..start);
                }
                in_root = false;
                if name == "[[clients]]" {
                    open = Some(start);
                } else if name.contains("clients") {
                    return None;
                } else if !found.clients.is_empty() {
                    found.interleaved = true;
                }
                line_start = false;
            }
            kind => {
                if line_start && depth == 0 {
                    if in_root && text(token.span()).contains("clients") {
                        return None;
                    }
                    if open.is_none() && !found.clients.is_empty() {
                        found.interleaved = true;
                    }
                }
                line_start = false;
                match kind {
                    TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
                    TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                        depth = depth.saturating_sub(1);
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(s) = open {
        found.clients.push(s..source.len());
    }
    Some(found)
}

/// `source` with the sections left out, each but for its line ends, so that what remains
/// keeps its line numbers. Borrowed when no other table follows the first section.
pub(super) fn without<'a>(source: &'a str, found: &Sections) -> std::borrow::Cow<'a, str> {
    let Some(first) = found.clients.first() else {
        return source.into();
    };
    if !found.interleaved {
        return source[..first.start].into();
    }
    let mut out = String::with_capacity(source.len() / 4);
    let mut at = 0;
    for s in &found.clients {
        out.push_str(&source[at..s.start]);
        out.extend(
            source[s.clone()]
                .bytes()
                .filter(|b| *b == b'\n')
                .map(|_| '\n'),
        );
        at = s.end;
    }
    out.push_str(&source[at..]);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(source: &str) -> Option<(Vec<&str>, bool)> {
        let found = find(source)?;
        Some((
            found.clients.iter().map(|r| &source[r.clone()]).collect(),
            found.interleaved,
        ))
    }

    #[test]
    fn each_clients_table_is_a_section_up_to_the_next_header() {
        let source = "[azure]\nx = 1\n[[clients]]\nname = \"a\"\nw = [\n  [1],\n]\n\n[[ clients ]] # b\nname = \"[[clients]]\"\n";
        let (found, interleaved) = sections(source).unwrap();
        assert_eq!(
            found,
            [
                "[[clients]]\nname = \"a\"\nw = [\n  [1],\n]\n\n",
                "[[ clients ]] # b\nname = \"[[clients]]\"\n"
            ]
        );
        assert!(!interleaved);
        assert_eq!(without(source, &find(source).unwrap()), "[azure]\nx = 1\n");
    }

    #[test]
    fn a_table_after_the_clients_keeps_its_line() {
        let source = "[[clients]]\nname = \"a\"\n[[events]]\nurl = 1\n";
        let found = find(source).unwrap();
        assert!(found.interleaved);
        assert_eq!(without(source, &found), "\n\n[[events]]\nurl = 1\n");
    }

    #[test]
    fn clients_in_another_form_is_parsed_whole() {
        assert!(find("clients = []\n").is_none());
        assert!(find("[clients.a]\nname = 1\n").is_none());
        assert!(find("[\"clients\"]\n").is_none());
        assert!(find("[[clients]]\n[clients.windows]\n").is_none());
    }
}
