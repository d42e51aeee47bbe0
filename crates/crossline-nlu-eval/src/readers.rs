//! Readers for the labelled data formats, chosen by file extension.

use std::path::Path;

use anyhow::{Context, bail};

/// One annotated slot value, by byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// Start byte offset.
    pub start: usize,
    /// End byte offset (exclusive).
    pub end: usize,
    /// Slot name.
    pub entity: String,
}

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The utterance.
    pub text: String,
    /// Gold intent; `oos` marks out-of-scope rows.
    pub intent: String,
    /// Gold slot spans (empty for formats without slots).
    pub entities: Vec<Entity>,
}

/// Reads a data file: `.tsv` (header `text<TAB>intent[...]`), `.csv` (header `text,category`) or `.jsonl`
/// (`{"text","intent","entities":[{"start","end","entity"}]}` with character offsets).
pub fn read_examples(path: &Path) -> anyhow::Result<Vec<Example>> {
    let content = std::fs::read_to_string(path).with_context(|| format!("cannot read data file {}", path.display()))?;
    let extension = path.extension().and_then(|extension| extension.to_str()).unwrap_or("").to_ascii_lowercase();
    let parsed = match extension.as_str() {
        "tsv" => parse_tsv(&content),
        "csv" => parse_csv(&content),
        "jsonl" | "ndjson" => parse_jsonl(&content),
        other => bail!("{}: unknown data format {other:?}; expected .tsv, .csv or .jsonl", path.display()),
    };
    parsed.with_context(|| format!("in data file {}", path.display()))
}

/// Parses TSV with a header whose first two columns are text and intent; extra columns are ignored.
pub fn parse_tsv(content: &str) -> anyhow::Result<Vec<Example>> {
    let mut lines = content.lines().enumerate();
    if lines.next().is_none() {
        return Ok(Vec::new());
    }
    let mut examples = Vec::new();
    for (number, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let mut columns = line.split('\t');
        let text = columns.next().unwrap_or_default();
        let Some(intent) = columns.next() else {
            bail!("line {}: expected text<TAB>intent", number + 1);
        };
        examples.push(Example { text: text.to_string(), intent: intent.trim().to_string(), entities: Vec::new() });
    }
    Ok(examples)
}

/// Splits CSV content into records of fields, honouring double quotes (with `""` as an escaped quote and
/// line breaks inside quoted fields).
fn csv_records(content: &str) -> anyhow::Result<Vec<(usize, Vec<String>)>> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut line = 1usize;
    let mut record_line = 1usize;
    let mut characters = content.chars().peekable();
    while let Some(character) = characters.next() {
        if in_quotes {
            match character {
                '"' if characters.peek() == Some(&'"') => {
                    characters.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                other => field.push(other),
            }
            continue;
        }
        match character {
            '"' => in_quotes = true,
            ',' => fields.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    records.push((record_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                record_line = line;
            }
            other => field.push(other),
        }
    }
    if in_quotes {
        bail!("line {record_line}: unterminated quoted field");
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((record_line, fields));
    }
    Ok(records)
}

/// Parses CSV with a header `text,category` (Banking77).
pub fn parse_csv(content: &str) -> anyhow::Result<Vec<Example>> {
    let records = csv_records(content)?;
    let mut examples = Vec::new();
    for (line, fields) in records.into_iter().skip(1) {
        if fields.len() < 2 {
            bail!("line {line}: expected text,category");
        }
        examples.push(Example { text: fields[0].clone(), intent: fields[1].trim().to_string(), entities: Vec::new() });
    }
    Ok(examples)
}

#[derive(serde::Deserialize)]
struct JsonExample {
    text: String,
    intent: String,
    #[serde(default)]
    entities: Vec<JsonEntity>,
}

#[derive(serde::Deserialize)]
struct JsonEntity {
    start: usize,
    end: usize,
    entity: String,
}

/// Converts a character offset to a byte offset (SNIPS offsets count characters, Rust strings bytes).
fn byte_offset(text: &str, character_offset: usize) -> Option<usize> {
    if character_offset == text.chars().count() {
        return Some(text.len());
    }
    text.char_indices().nth(character_offset).map(|(offset, _)| offset)
}

/// Parses JSON lines (SNIPS).
pub fn parse_jsonl(content: &str) -> anyhow::Result<Vec<Example>> {
    let mut examples = Vec::new();
    for (number, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: JsonExample =
            serde_json::from_str(line).with_context(|| format!("line {}: invalid JSON example", number + 1))?;
        let mut entities = Vec::new();
        for entity in parsed.entities {
            let (Some(start), Some(end)) =
                (byte_offset(&parsed.text, entity.start), byte_offset(&parsed.text, entity.end))
            else {
                bail!("line {}: entity offsets outside the text", number + 1);
            };
            if start >= end {
                bail!("line {}: empty or reversed entity span", number + 1);
            }
            entities.push(Entity { start, end, entity: entity.entity });
        }
        examples.push(Example { text: parsed.text, intent: parsed.intent, entities });
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_skips_header_and_extra_columns() {
        let examples = parse_tsv("text\tintent\textra\nhello there\tgreet\tx\n\n").unwrap();
        assert_eq!(examples.len(), 1);
        assert_eq!(examples[0].intent, "greet");
    }

    #[test]
    fn csv_handles_quotes_and_commas() {
        let content = "text,category\n\"Hi, \"\"you\"\"\",greet\nplain,other\r\n";
        let examples = parse_csv(content).unwrap();
        assert_eq!(examples[0].text, "Hi, \"you\"");
        assert_eq!(examples[0].intent, "greet");
        assert_eq!(examples[1].intent, "other");
    }

    #[test]
    fn jsonl_converts_character_offsets() {
        let line = r#"{"text": "add Flow Español now", "intent": "Add", "entities": [{"start": 4, "end": 16, "entity": "playlist", "value": "Flow Español"}]}"#;
        let examples = parse_jsonl(line).unwrap();
        let entity = &examples[0].entities[0];
        assert_eq!(&examples[0].text[entity.start..entity.end], "Flow Español");
    }

    #[test]
    fn jsonl_rejects_bad_offsets() {
        let line = r#"{"text": "hi", "intent": "A", "entities": [{"start": 1, "end": 9, "entity": "x"}]}"#;
        assert!(parse_jsonl(line).is_err());
    }
}
