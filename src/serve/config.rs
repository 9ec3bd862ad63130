//! The `[serve]` table of `pare.toml`: which registries pare takes sources from, which
//! repositories and tags it hardens, where the results go, and how many at once. A push is
//! routed here to a job (a pinned source and a destination) or to a skip with its reason.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::probe::Probe;
use crate::reference::{ImageRef, RegistryRef};

use super::events::Push;

/// The default destination: the same repository, tag `TAG-hardened`.
pub const DEFAULT_DEST: &str = "{registry}/{repository}:{tag}-hardened";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Registries (`HOST[:PORT]`, as the events' `request.host` names them) sources come from;
    /// an event from any other is skipped.
    pub registries: Vec<String>,
    /// Globs on `REPOSITORY:TAG` to harden (empty: all); `*` crosses `/`.
    pub include: Vec<String>,
    /// Globs on `REPOSITORY:TAG` never hardened.
    pub exclude: Vec<String>,
    /// The destination, with `{registry}`, `{repository}` and `{tag}` of the source.
    pub dest: String,
    /// Images hardened at once.
    pub jobs: usize,
    /// Attempts before a job is failed for good (with waits of 5 s, 10 s, … 10 min between).
    pub max_attempts: u32,
    /// Run the checklist on each result and refuse to push one that fails (`--check`).
    pub check: bool,
    /// Sign each result with this key (`--sign-key`), relative to the configuration file.
    pub sign_key: Option<PathBuf>,
    /// On SIGTERM, seconds the jobs under way may take to finish before they are put back in
    /// the queue.
    pub grace_seconds: u64,
    /// A destination that is the source itself is allowed (`--in-place`, with the
    /// `TAG-original` backup).
    pub in_place: bool,
    /// Probes for the images they match (`[[serve.probe]]`): run in the result and in the
    /// source before anything is pushed, as `pare harden --probe` does (the sandbox needs
    /// user namespaces).
    pub probe: Vec<ServeProbe>,
}

/// `[[serve.probe]]`: what proves the images matching `match` work.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServeProbe {
    /// A glob on `REPOSITORY:TAG`.
    #[serde(rename = "match")]
    pub matches: String,
    /// Each probe's arguments, as `--probe` takes them.
    pub args: Vec<String>,
    /// `PORT/PATH`, as `--http-probe` takes them.
    pub http: Vec<String>,
    /// Seconds per probe.
    pub timeout: Option<u64>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            registries: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            dest: DEFAULT_DEST.into(),
            jobs: 2,
            max_attempts: 5,
            check: false,
            sign_key: None,
            grace_seconds: 60,
            in_place: false,
            probe: Vec::new(),
        }
    }
}

/// A push routed to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `HOST/REPO:TAG@sha256:…`.
    pub source: String,
    pub digest: String,
    pub dest: String,
}

/// The rules of a [`ServeConfig`], checked once.
pub struct Rules {
    pub config: ServeConfig,
    include: globset::GlobSet,
    exclude: globset::GlobSet,
    /// Each `[[serve.probe]]`'s glob, with its probes parsed.
    probes: Vec<(globset::GlobMatcher, Vec<Probe>, Option<u64>)>,
}

impl Rules {
    /// The configuration checked: at least one registry, valid globs, a destination
    /// template that names a registry image.
    pub fn new(config: ServeConfig) -> Result<Self> {
        if config.registries.is_empty() {
            return Err(Error::Usage(
                "[serve] registries is empty: name the registries whose pushes pare hardens (e.g. registries = [\"registry.example.com\"])".into(),
            ));
        }
        if config.jobs == 0 || config.max_attempts == 0 {
            return Err(Error::Usage(
                "[serve] jobs and max-attempts must be at least 1".into(),
            ));
        }
        let mut probes = Vec::new();
        for p in &config.probe {
            let glob = globset::Glob::new(&p.matches)
                .map_err(|e| Error::Usage(format!("[[serve.probe]] match {:?}: {e}", p.matches)))?;
            let list = crate::probe::ProbeConfig {
                args: p.args.clone(),
                http: p.http.clone(),
                timeout: p.timeout,
            }
            .probes()?;
            probes.push((glob.compile_matcher(), list, p.timeout));
        }
        let rules = Rules {
            include: crate::batch::globs(&config.include, "[serve] include")?,
            exclude: crate::batch::globs(&config.exclude, "[serve] exclude")?,
            probes,
            config,
        };
        let sample = RegistryRef {
            registry: rules.config.registries[0].clone(),
            repository: "team/app".into(),
            tag: Some("1.0".into()),
            digest: None,
        };
        rules
            .dest_for(&sample)
            .map_err(|e| Error::Usage(format!("[serve] dest {:?}: {e}", rules.config.dest)))?;
        Ok(rules)
    }

    /// The probes for `REPOSITORY:TAG` (of every `[[serve.probe]]` matching it), and the
    /// longest timeout they name.
    pub fn probes_for(&self, repository: &str, tag: &str) -> (Vec<Probe>, Option<u64>) {
        let name = format!("{repository}:{tag}");
        let mut out = Vec::new();
        let mut timeout: Option<u64> = None;
        for (glob, list, t) in &self.probes {
            if glob.is_match(&name) {
                out.extend(list.iter().cloned());
                timeout = timeout.max(*t);
            }
        }
        (out, timeout)
    }

    /// Whether pare takes sources from `host`.
    pub fn serves(&self, host: &str) -> bool {
        self.config
            .registries
            .iter()
            .any(|r| r.eq_ignore_ascii_case(host))
    }

    /// Whether `REGISTRY/REPOSITORY:TAG` is one to harden, else why not.
    pub fn admits(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
    ) -> std::result::Result<(), String> {
        if !self.serves(registry) {
            return Err(format!(
                "registry {registry} is not one [serve] registries names"
            ));
        }
        let name = format!("{repository}:{tag}");
        if !self.config.include.is_empty() && !self.include.is_match(&name) {
            return Err("not matched by [serve] include".into());
        }
        if self.exclude.is_match(&name) {
            return Err("matched by [serve] exclude".into());
        }
        Ok(())
    }

    /// A push as a job, or the reason it is none.
    pub fn route(&self, p: &Push) -> std::result::Result<Route, String> {
        let src = RegistryRef {
            registry: p.registry.clone(),
            repository: p.repository.clone(),
            tag: Some(p.tag.clone()),
            digest: Some(p.digest.clone()),
        };
        self.route_ref(&src, None)
    }

    /// A source reference (tag and digest known) as a job, or the reason it is none; `dest`
    /// (`POST /harden`'s) instead of the template's must be on a registry pare serves.
    pub fn route_ref(
        &self,
        src: &RegistryRef,
        dest: Option<&str>,
    ) -> std::result::Result<Route, String> {
        let tag = src.tag.clone().unwrap_or_else(|| "latest".into());
        self.admits(&src.registry, &src.repository, &tag)?;
        let digest = src.digest.clone().ok_or_else(|| "no digest".to_string())?;
        let source = format!("{}/{}:{tag}@{digest}", src.registry, src.repository);
        // What an event names is checked as a reference before it is stored.
        if source
            .parse::<ImageRef>()
            .ok()
            .and_then(|r| r.as_registry().cloned())
            .is_none_or(|r| r.repository != src.repository)
        {
            return Err(format!("{source}: not a valid image reference"));
        }
        let dest = match dest {
            None => self.dest_for(src),
            Some(d) => self.explicit_dest(src, d),
        }
        .map_err(|e| e.to_string())?;
        Ok(Route {
            source,
            digest,
            dest: dest.to_string(),
        })
    }

    /// `dest` of the configuration for a source (the source itself only with `in-place`).
    fn dest_for(&self, src: &RegistryRef) -> Result<ImageRef> {
        let tag = src.tag.as_deref().unwrap_or("latest");
        let text = self
            .config
            .dest
            .replace("{registry}", &src.registry)
            .replace("{repository}", &src.repository)
            .replace("{tag}", tag);
        if text.contains(['{', '}']) {
            return Err(Error::Usage(
                "unknown placeholder (known: {registry}, {repository}, {tag})".into(),
            ));
        }
        self.checked_dest(src, &text)
    }

    /// A destination named in a request: on a registry pare serves.
    fn explicit_dest(&self, src: &RegistryRef, text: &str) -> Result<ImageRef> {
        let d = self.checked_dest(src, text)?;
        match d.as_registry() {
            Some(r) if self.serves(&r.registry) => Ok(d),
            _ => Err(Error::Usage(format!(
                "dest {text}: not on a registry [serve] registries names"
            ))),
        }
    }

    /// A registry image with a tag, not the source unless `in-place`.
    fn checked_dest(&self, src: &RegistryRef, text: &str) -> Result<ImageRef> {
        let tag = src.tag.as_deref().unwrap_or("latest");
        let dest: ImageRef = text.parse()?;
        let Some(d) = dest.as_registry() else {
            return Err(Error::Usage(format!("{text}: not a registry image")));
        };
        if d.digest.is_some() || d.tag.is_none() {
            return Err(Error::Usage(format!("{text}: a destination needs a tag")));
        }
        let same = d.registry.eq_ignore_ascii_case(&src.registry)
            && d.repository == src.repository
            && d.tag.as_deref() == Some(tag);
        if same && !self.config.in_place {
            return Err(Error::Usage(format!(
                "{text} is the source itself (set in-place = true to replace sources)"
            )));
        }
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:4f98543ac6f792c1352e8c5a0555601ab3fd3497810581606c36c7416c5ffe37";

    fn push(registry: &str, repo: &str, tag: &str) -> Push {
        Push {
            registry: registry.into(),
            repository: repo.into(),
            tag: tag.into(),
            digest: D.into(),
        }
    }

    fn rules(toml_text: &str) -> Result<Rules> {
        #[derive(Deserialize)]
        struct F {
            serve: ServeConfig,
        }
        let f: F = toml::from_str(toml_text).map_err(|e| Error::Usage(e.to_string()))?;
        Rules::new(f.serve)
    }

    #[test]
    fn pushes_are_routed_by_registry_include_and_exclude() {
        let r = rules(
            "[serve]\nregistries = [\"reg.example:5000\"]\ninclude = [\"team/*\"]\nexclude = [\"team/legacy-*\", \"*:*-rc*\"]\n",
        )
        .unwrap();
        let ok = r
            .route(&push("REG.example:5000", "team/api", "1.4"))
            .unwrap();
        assert_eq!(ok.source, format!("REG.example:5000/team/api:1.4@{D}"));
        assert_eq!(ok.dest, "REG.example:5000/team/api:1.4-hardened");
        assert!(
            r.route(&push("reg.example:5000", "team/sub/api", "1"))
                .is_ok()
        );
        for (p, why) in [
            (push("evil.example", "team/api", "1.4"), "not one [serve]"),
            (push("reg.example:5000", "other/api", "1.4"), "include"),
            (push("reg.example:5000", "team/legacy-db", "1"), "exclude"),
            (push("reg.example:5000", "team/api", "2.0-rc1"), "exclude"),
            (push("reg.example:5000", "team/../x", "1"), "not a valid"),
            (push("reg.example:5000", "team/API", "1"), "not a valid"),
        ] {
            let e = r.route(&p).unwrap_err();
            assert!(e.contains(why), "{p:?}: {e}");
        }
    }

    #[test]
    fn probes_apply_to_the_images_they_match() {
        let r = rules(
            "[serve]\nregistries = [\"r\"]\n[[serve.probe]]\nmatch = \"team/api:*\"\nargs = [\"--version\"]\nhttp = [\"8080/healthz\"]\ntimeout = 20\n[[serve.probe]]\nmatch = \"team/*\"\nargs = [\"--help\"]\n",
        )
        .unwrap();
        let (p, t) = r.probes_for("team/api", "1.4");
        assert_eq!((p.len(), t), (3, Some(20)));
        assert_eq!(r.probes_for("team/db", "1").0.len(), 1);
        assert!(r.probes_for("other/api", "1").0.is_empty());
    }

    #[test]
    fn destinations_follow_the_template_and_never_replace_the_source_unasked() {
        let r = rules(
            "[serve]\nregistries = [\"reg:5000\"]\ndest = \"hardened.example/{repository}:{tag}\"\n",
        )
        .unwrap();
        let j = r.route(&push("reg:5000", "a/b", "v1")).unwrap();
        assert_eq!(j.dest, "hardened.example/a/b:v1");
        let e = rules(
            "[serve]\nregistries = [\"reg:5000\"]\ndest = \"{registry}/{repository}:{tag}\"\n",
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("in-place"), "{e}");
        let r = rules(
            "[serve]\nregistries = [\"reg:5000\"]\ndest = \"{registry}/{repository}:{tag}\"\nin-place = true\n",
        )
        .unwrap();
        assert_eq!(
            r.route(&push("reg:5000", "a", "1")).unwrap().dest,
            "reg:5000/a:1"
        );
        // A destination asked for (POST /harden) stays on the registries pare serves.
        let src = RegistryRef {
            registry: "reg:5000".into(),
            repository: "a".into(),
            tag: Some("1".into()),
            digest: Some(D.into()),
        };
        assert_eq!(
            r.route_ref(&src, Some("reg:5000/b:2")).unwrap().dest,
            "reg:5000/b:2"
        );
        let e = r
            .route_ref(&src, Some("elsewhere.example/b:2"))
            .unwrap_err();
        assert!(e.contains("not on a registry"), "{e}");
        for bad in [
            "[serve]\nregistries = []\n",
            "[serve]\nregistries = [\"r\"]\ndest = \"{registry}/{repo}:{tag}\"\n",
            "[serve]\nregistries = [\"r\"]\ndest = \"oci:/tmp/x:{tag}\"\n",
            "[serve]\nregistries = [\"r\"]\ninclude = [\"a[\"]\n",
            "[serve]\nregistries = [\"r\"]\njobs = 0\n",
            "[serve]\nregistries = [\"r\"]\nunknown = 1\n",
            "[serve]\nregistries = [\"r\"]\n[[serve.probe]]\nmatch = \"a[\"\n",
            "[serve]\nregistries = [\"r\"]\n[[serve.probe]]\nmatch = \"*\"\nhttp = [\"x\"]\n",
        ] {
            assert!(rules(bad).is_err(), "{bad}");
        }
    }
}
