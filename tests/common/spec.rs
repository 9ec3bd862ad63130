//! [`ImageSpec`]: what one image of a layout holds (layers and config).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::*;

/// Everything needed to describe one image of an OCI layout.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` strings; defaults to `PATH=`[`DEFAULT_PATH`].
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// e.g. `"8080/tcp"`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Extra keys of the config's `config` object (e.g. `Healthcheck`, `StopSignal`); they
    /// override the fields above when the key collides.
    pub extra_config: Map<String, Value>,
    /// Extra top-level keys of the image config (e.g. `author`).
    pub extra_top_level: Map<String, Value>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            layers: Vec::new(),
            architecture: "amd64".to_string(),
            os: "linux".to_string(),
            variant: None,
            entrypoint: None,
            cmd: None,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            workdir: None,
            user: None,
            exposed_ports: Vec::new(),
            labels: BTreeMap::new(),
            extra_config: Map::new(),
            extra_top_level: Map::new(),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl ImageSpec {
    pub fn new(layers: Vec<Layer>) -> ImageSpec {
        ImageSpec {
            layers,
            ..ImageSpec::default()
        }
    }

    pub fn with_layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn with_entrypoint(mut self, argv: &[&str]) -> Self {
        self.entrypoint = Some(strings(argv));
        self
    }

    pub fn with_cmd(mut self, argv: &[&str]) -> Self {
        self.cmd = Some(strings(argv));
        self
    }

    /// Set (or replace) one environment variable.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env
            .retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(key));
        self.env.push(format!("{key}={value}"));
        self
    }

    pub fn with_workdir(mut self, dir: &str) -> Self {
        self.workdir = Some(dir.to_string());
        self
    }

    pub fn with_user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    pub fn with_exposed_port(mut self, port: &str) -> Self {
        self.exposed_ports.push(port.to_string());
        self
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    pub fn with_extra_config(mut self, key: &str, value: Value) -> Self {
        self.extra_config.insert(key.to_string(), value);
        self
    }

    pub fn with_platform(mut self, architecture: &str, variant: Option<&str>) -> Self {
        self.architecture = architecture.to_string();
        self.variant = variant.map(String::from);
        self
    }

    /// The `platform` object used in index descriptors.
    pub fn platform(&self) -> Value {
        let mut platform = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }

    /// The image config JSON for the given layer diff_ids.
    pub fn config_json(&self, diff_ids: &[String]) -> Value {
        let mut cfg = Map::new();
        if let Some(user) = &self.user {
            cfg.insert("User".into(), json!(user));
        }
        if !self.exposed_ports.is_empty() {
            let ports: Map<String, Value> = self
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            cfg.insert("ExposedPorts".into(), Value::Object(ports));
        }
        if !self.env.is_empty() {
            cfg.insert("Env".into(), json!(self.env));
        }
        if let Some(entrypoint) = &self.entrypoint {
            cfg.insert("Entrypoint".into(), json!(entrypoint));
        }
        if let Some(cmd) = &self.cmd {
            cfg.insert("Cmd".into(), json!(cmd));
        }
        if let Some(workdir) = &self.workdir {
            cfg.insert("WorkingDir".into(), json!(workdir));
        }
        if !self.labels.is_empty() {
            cfg.insert("Labels".into(), json!(self.labels));
        }
        for (key, value) in &self.extra_config {
            cfg.insert(key.clone(), value.clone());
        }
        let history: Vec<Value> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let created_by = layer
                    .created_by
                    .clone()
                    .unwrap_or_else(|| format!("pare-test: layer {i}"));
                json!({ "created": CREATED, "created_by": created_by })
            })
            .collect();
        let mut config = json!({
            "created": CREATED,
            "architecture": self.architecture,
            "os": self.os,
            "config": cfg,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if let Some(variant) = &self.variant {
            config["variant"] = json!(variant);
        }
        for (key, value) in &self.extra_top_level {
            config[key] = value.clone();
        }
        config
    }
}
