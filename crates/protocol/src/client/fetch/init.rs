//! A new bare mirror repository, written as `git clone --mirror` leaves it before its fetch.

use std::{fs, io, path::Path};

/// Creates the bare repository `directory` for a mirror of `url`: the directories git
/// makes, `HEAD` (pointing at `refs/heads/master` until the first fetch sets the remote's)
/// and a config with `core.bare` and `remote.origin` (`url`, `fetch = +refs/*:refs/*`,
/// `mirror = true`). A local path is recorded absolute, as git clone does.
pub fn init_mirror(directory: &Path, url: &str) -> io::Result<()> {
    for sub in [
        "objects/info",
        "objects/pack",
        "refs/heads",
        "refs/tags",
        "info",
    ] {
        fs::create_dir_all(directory.join(sub))?;
    }
    let url = match Path::new(url).canonicalize() {
        Ok(path) if !url.contains("://") => path.display().to_string(),
        _ => url.to_owned(),
    };
    let config = format!(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n\
         [remote \"origin\"]\n\turl = {}\n\tfetch = +refs/*:refs/*\n\tmirror = true\n",
        config_value(&url)
    );
    fs::write(directory.join("config"), config)?;
    fs::write(directory.join("HEAD"), "ref: refs/heads/master\n")
}

/// A value as git's config writer quotes it.
fn config_value(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    if escaped.contains([';', '#']) || escaped.starts_with(' ') || escaped.ends_with(' ') {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_as_git_writes_them() {
        assert_eq!(config_value("https://h/r.git"), "https://h/r.git");
        assert_eq!(config_value("a;b"), "\"a;b\"");
        assert_eq!(config_value("a\"b\\"), "a\\\"b\\\\");
    }
}
