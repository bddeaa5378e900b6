//! `packgate watch` over HTTP(S): a placeholder until the HTTP watch client is merged.

/// Follow the repository at `url` over the HTTP watch endpoint, printing one line per changed
/// ref to `out`.
pub fn run(
    _client: &packgate::transport::client::Client,
    url: &str,
    _prefixes: &[String],
    _out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    anyhow::bail!("watching '{url}' over HTTP is not supported by this build")
}
