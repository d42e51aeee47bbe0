//! `crossline bot check|push`: bot definitions kept as YAML (or JSON) files next to the code.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bot file commands.
#[derive(Subcommand)]
pub enum BotCommand {
    /// Validate and train a definition offline; errors name the field.
    Check {
        /// A `.yaml`, `.yml` or `.json` bot definition.
        file: PathBuf,
    },
    /// Store a definition on a server (`PUT /api/v1/bots/{name}`); answered once it is trained and live.
    Push {
        /// A `.yaml`, `.yml` or `.json` bot definition.
        file: PathBuf,
        /// The server, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "CROSSLINE_URL")]
        url: String,
        /// The workspace's API key.
        #[arg(long, env = "CROSSLINE_API_KEY")]
        api_key: String,
        /// The bot's name; the file name without its extension when absent.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Read a definition file as JSON, whatever its format.
pub fn read_definition(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("yaml" | "yml") => {
            serde_norway::from_str(&text).with_context(|| format!("{} is not valid YAML", path.display()))
        }
        Some("json") => serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display())),
        _ => bail!("{}: give a .yaml, .yml or .json file", path.display()),
    }
}

/// Run a bot command.
pub async fn run(command: BotCommand) -> anyhow::Result<()> {
    match command {
        BotCommand::Check { file } => {
            let definition = read_definition(&file)?;
            let started = Instant::now();
            let checked = tokio::task::spawn_blocking(move || {
                crossline_bot::parse(&definition).and_then(|parsed| crossline_bot::compile(&parsed).map(|_| parsed))
            })
            .await?;
            let parsed = checked.map_err(|err| anyhow::anyhow!("{}: {err}", file.display()))?;
            println!(
                "{}: valid; {} intents trained in {:.2} s",
                file.display(),
                parsed.intents.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        BotCommand::Push { file, url, api_key, name } => {
            let definition = read_definition(&file)?;
            let name = match name {
                Some(name) => name,
                None => file.file_stem().and_then(|stem| stem.to_str()).context("name the bot with --name")?.to_owned(),
            };
            let response = reqwest::Client::new()
                .put(format!("{}/api/v1/bots/{name}", url.trim_end_matches('/')))
                .bearer_auth(api_key)
                .json(&definition)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let message = body["error"]["message"].as_str().unwrap_or("no details");
                bail!("the server refused {}: {status}: {message}", file.display());
            }
            println!("{name} version {} is live", body["version"]);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("branch.yaml");
        std::fs::write(
            &yaml,
            "greeting: Hi!\nintents:\n  - name: opening_hours\n    utterances: [\"when are you open\", \"opening times\"]\n    fulfillment:\n      response: We are open 9 to 5.\n",
        )
        .unwrap();
        let json = dir.path().join("branch.json");
        std::fs::write(
            &json,
            r#"{"greeting": "Hi!", "intents": [{"name": "opening_hours", "utterances": ["when are you open", "opening times"], "fulfillment": {"response": "We are open 9 to 5."}}]}"#,
        )
        .unwrap();
        assert_eq!(read_definition(&yaml).unwrap(), read_definition(&json).unwrap());
        let definition = crossline_bot::parse(&read_definition(&yaml).unwrap()).unwrap();
        crossline_bot::compile(&definition).unwrap();
        let text = dir.path().join("branch.txt");
        std::fs::write(&text, "x").unwrap();
        assert!(read_definition(&text).unwrap_err().to_string().contains(".yaml"));
        std::fs::write(&yaml, "intents: [unclosed").unwrap();
        assert!(read_definition(&yaml).unwrap_err().to_string().contains("not valid YAML"));
    }
}
