//! Imported lists: a CSV whose header names identity kinds, one person per row.

use crossline_core::{Identity, IdentityKind};

/// Most rows in one import.
pub const MAX_ROWS: usize = 1_000_000;

/// One row: its line in the file and the identities it gives.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRow {
    /// The line (1 is the header).
    pub line: usize,
    /// Normalised identities, in the header's column order.
    pub identities: Vec<Identity>,
}

/// A fault in a CSV import, naming its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct CsvError {
    /// The line.
    pub line: usize,
    /// The column (1-based, in fields).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The most columns a list may have.
pub const MAX_COLUMNS: usize = 64;

/// Parses a list: a header of identity kinds (`user_id`, `email`, `phone`, ...; other columns are
/// ignored), then one row per person; values are normalised as ingestion does (phones in
/// `default_region`). Quoted fields (`"a, b"`, `""` for a quote) are understood.
pub fn parse_csv(text: &str, default_region: &str) -> Result<Vec<ListRow>, CsvError> {
    let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(CsvError {
            line: 1,
            column: 1,
            message: "the file is empty; the first line names identity kinds".into(),
        });
    };
    let columns: Vec<Option<IdentityKind>> =
        fields(header, 1)?.iter().map(|name| name.trim().to_ascii_lowercase().parse::<IdentityKind>().ok()).collect();
    if columns.iter().all(Option::is_none) {
        return Err(CsvError {
            line: 1,
            column: 1,
            message: "the header names no identity kind (user_id, anonymous_id, email, phone, ...)".into(),
        });
    }
    let mut rows = Vec::new();
    for (index, line) in lines {
        let number = index + 1;
        if rows.len() >= MAX_ROWS {
            return Err(CsvError { line: number, column: 1, message: format!("more than {MAX_ROWS} rows") });
        }
        let mut identities = Vec::new();
        for (column, value) in fields(line, number)?.iter().enumerate() {
            let (Some(Some(kind)), value) = (columns.get(column), value.trim()) else { continue };
            if value.is_empty() {
                continue;
            }
            let identity = Identity::parse(*kind, value, default_region).map_err(|err| CsvError {
                line: number,
                column: column + 1,
                message: format!("{value:?} is not a valid {}: {err}", kind.as_str()),
            })?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err(CsvError { line: number, column: 1, message: "the row names no one".into() });
        }
        rows.push(ListRow { line: number, identities });
    }
    Ok(rows)
}

fn fields(line: &str, number: usize) -> Result<Vec<String>, CsvError> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("one field");
        match (c, quoted) {
            ('"', false) if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => {
                if fields.len() >= MAX_COLUMNS {
                    return Err(CsvError {
                        line: number,
                        column: fields.len() + 1,
                        message: format!("more than {MAX_COLUMNS} columns"),
                    });
                }
                fields.push(String::new())
            }
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err(CsvError { line: number, column: fields.len(), message: "a quoted field is not closed".into() });
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_normalised_and_faults_are_placed() {
        let rows = parse_csv("email,name,phone\n Ann@Example.com ,Ann,\n,\"Bob, Jr\",(415) 555-0100\n", "US").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].identities[0].value, "ann@example.com");
        assert_eq!((rows[1].line, rows[1].identities[0].value.as_str()), (3, "+14155550100"));
        let err = parse_csv("email\nok@example.com\nnot-an-email\n", "US").unwrap_err();
        assert_eq!((err.line, err.column), (3, 1));
        assert!(parse_csv("name,age\nann,3\n", "US").unwrap_err().message.contains("header"));
        assert_eq!(parse_csv("email\n\"open\n", "US").unwrap_err().line, 2);
        let wide = format!("user_id\n{}\n", ",".repeat(1_000_000));
        let err = parse_csv(&wide, "US").unwrap_err();
        assert_eq!((err.line, err.column), (2, 65), "{err}");
    }
}
