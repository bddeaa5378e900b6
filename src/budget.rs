//! The CPU and memory budget of `packgate serve` and `packgate daemon`: the flags and the
//! `[budget]` table of `serve --config`, then the machine's defaults
//! ([`BudgetConfig::for_machine()`]).

use std::time::Duration;

use clap::Args;
use packgate::protocol::budget::{Budget, BudgetConfig};
use serde::Deserialize;

/// The budget's flags, shared by `serve` and `daemon`.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct BudgetArgs {
    /// Threads of pack generation and push indexing that run at once, over all requests
    /// [default: the cores]; requests beyond wait their turn.
    #[arg(long, value_name = "N")]
    cpu_slots: Option<usize>,
    /// Working memory the requests may reserve together, in bytes or with a k/m/g suffix
    /// [default: half the machine's or the control group's memory].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory_budget: Option<u64>,
    /// Seconds a request waits for its turn before it is refused [default: 600].
    #[arg(long, value_name = "SECONDS")]
    max_queue_wait: Option<u64>,
}

/// `[budget]` of `serve --config`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct BudgetSection {
    pub(crate) cpu_slots: Option<usize>,
    /// Bytes, or a string with a k/m/g suffix.
    pub(crate) memory: Option<Size>,
    pub(crate) max_queue_wait: Option<u64>,
}

/// A size in bytes: a number, or a string like `"512m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size(pub(crate) u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(bytes) => Ok(Size(bytes)),
            Raw::Text(text) => parse_size(&text)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `4096`, `512k`, `64m`, `2g` (git's suffixes, powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((at, 'k' | 'K')) => (&text[..at], 10),
        Some((at, 'm' | 'M')) => (&text[..at], 20),
        Some((at, 'g' | 'G')) => (&text[..at], 30),
        _ => (text, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size (bytes, or a number with k, m or g)"))
}

/// The budget: flags first, then the file's section, then the machine's defaults.
pub(crate) fn budget(args: &BudgetArgs, file: &BudgetSection) -> anyhow::Result<Budget> {
    let defaults = BudgetConfig::for_machine();
    let cpu_slots = args
        .cpu_slots
        .or(file.cpu_slots)
        .unwrap_or(defaults.cpu_slots);
    if cpu_slots == 0 {
        anyhow::bail!("the CPU slots must be at least 1");
    }
    let config = BudgetConfig {
        cpu_slots,
        memory_bytes: args
            .memory_budget
            .or(file.memory.map(|size| size.0))
            .unwrap_or(defaults.memory_bytes),
        max_wait: args
            .max_queue_wait
            .or(file.max_queue_wait)
            .map_or(defaults.max_wait, Duration::from_secs),
    };
    tracing::debug!(?config, "budget");
    Ok(Budget::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        for bad in ["", "g", "-1", "0", "1t", "99999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = BudgetArgs {
            cpu_slots: Some(3),
            ..BudgetArgs::default()
        };
        let file = BudgetSection {
            cpu_slots: Some(5),
            memory: Some(Size(1 << 20)),
            max_queue_wait: Some(7),
        };
        let Ok(budget) = budget(&args, &file) else {
            panic!("a valid budget");
        };
        assert_eq!(
            budget.config(),
            &BudgetConfig {
                cpu_slots: 3,
                memory_bytes: 1 << 20,
                max_wait: Duration::from_secs(7)
            }
        );
        let zero = BudgetArgs {
            cpu_slots: Some(0),
            ..BudgetArgs::default()
        };
        assert!(super::budget(&zero, &BudgetSection::default()).is_err());
    }
}
