//! Dockerfile instructions applied to an image's run configuration (`docker import
//! --change`): `CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`, `USER`, `LABEL`, `EXPOSE`, `VOLUME`,
//! `STOPSIGNAL`.

use serde_json::{json, Map, Value};

use crate::ImageError;

fn bad(msg: String) -> ImageError {
    ImageError::InvalidChange(msg)
}

/// A command in JSON form (`["a", "b"]`) or shell form (`a b` → `/bin/sh -c "a b"`).
fn command(arg: &str) -> Result<Value, ImageError> {
    if arg.starts_with('[') {
        let v: Vec<String> = serde_json::from_str(arg)
            .map_err(|e| bad(format!("{arg:?} is not a JSON array of strings: {e}")))?;
        return Ok(json!(v));
    }
    Ok(json!(["/bin/sh", "-c", arg]))
}

/// `K=V K2=V2` or the old `K V` form.
fn pairs(arg: &str, what: &str) -> Result<Vec<(String, String)>, ImageError> {
    if !arg.contains('=') {
        let (k, v) = arg
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad(format!("{what} needs KEY=VALUE, got {arg:?}")))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    arg.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.trim_matches('"').to_string())),
            _ => Err(bad(format!("{what} needs KEY=VALUE, got {kv:?}"))),
        })
        .collect()
}

fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = config.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("made an object above")
}

/// Applies one instruction to the `config` object of an image configuration.
pub fn apply(config: &mut Map<String, Value>, change: &str) -> Result<(), ImageError> {
    let change = change.trim();
    let (word, arg) = change.split_once(char::is_whitespace).unwrap_or((change, ""));
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(bad(format!("{change:?} has no argument")));
    }
    match word.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.insert("Cmd".into(), command(arg)?);
        }
        "ENTRYPOINT" => {
            config.insert("Entrypoint".into(), command(arg)?);
            // As in a Dockerfile: a new entrypoint drops the inherited command.
            config.remove("Cmd");
        }
        "ENV" => {
            let env = config.entry("Env").or_insert_with(|| json!([]));
            let list = env.as_array_mut().ok_or_else(|| bad("Env is not a list".into()))?;
            for (k, v) in pairs(arg, "ENV")? {
                list.retain(|e| {
                    e.as_str().and_then(|s| s.split_once('=')).map(|p| p.0) != Some(&k)
                });
                list.push(json!(format!("{k}={v}")));
            }
        }
        "WORKDIR" => {
            if !arg.starts_with('/') {
                return Err(bad(format!("WORKDIR must be absolute, got {arg:?}")));
            }
            config.insert("WorkingDir".into(), json!(arg));
        }
        "USER" => {
            config.insert("User".into(), json!(arg));
        }
        "LABEL" => {
            for (k, v) in pairs(arg, "LABEL")? {
                object(config, "Labels").insert(k, json!(v));
            }
        }
        "EXPOSE" => {
            for p in arg.split_whitespace() {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                if port.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(bad(format!("EXPOSE needs PORT[/tcp|udp|sctp], got {p:?}")));
                }
                object(config, "ExposedPorts").insert(format!("{port}/{proto}"), json!({}));
            }
        }
        "VOLUME" => {
            let paths: Vec<String> = if arg.starts_with('[') {
                serde_json::from_str(arg).map_err(|e| bad(format!("VOLUME {arg:?}: {e}")))?
            } else {
                arg.split_whitespace().map(str::to_string).collect()
            };
            for p in paths {
                object(config, "Volumes").insert(p, json!({}));
            }
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), json!(arg));
        }
        other => return Err(bad(format!("unsupported instruction {other:?}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(changes: &[&str]) -> Result<Value, ImageError> {
        let mut c = Map::new();
        c.insert("Env".into(), json!(["PATH=/bin"]));
        for ch in changes {
            apply(&mut c, ch)?;
        }
        Ok(Value::Object(c))
    }

    #[test]
    fn instructions() {
        let c = run(&[
            r#"CMD ["sleep", "inf"]"#,
            "ENV A=1 B=\"two\"",
            "ENV PATH /usr/bin",
            "workdir /srv",
            "USER 1000:1000",
            "LABEL a=b",
            "EXPOSE 80 53/udp",
            "VOLUME /data",
            "STOPSIGNAL SIGINT",
        ])
        .unwrap();
        assert_eq!(c["Cmd"], json!(["sleep", "inf"]));
        assert_eq!(c["Env"], json!(["A=1", "B=two", "PATH=/usr/bin"]));
        assert_eq!(c["WorkingDir"], json!("/srv"));
        assert_eq!(c["User"], json!("1000:1000"));
        assert_eq!(c["Labels"], json!({"a": "b"}));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(c["StopSignal"], json!("SIGINT"));
        let c = run(&["CMD echo hi", "ENTRYPOINT [\"/init\"]"]).unwrap();
        assert_eq!(c["Entrypoint"], json!(["/init"]));
        assert!(c.get("Cmd").is_none());
        assert_eq!(run(&["CMD echo hi"]).unwrap()["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
    }

    #[test]
    fn bad_instructions() {
        for bad in [
            "RUN make",
            "CMD",
            "CMD [\"unterminated\"",
            "CMD [1, 2]",
            "WORKDIR rel",
            "ENV =x",
            "EXPOSE 99999",
            "EXPOSE 80/icmp",
        ] {
            assert!(matches!(run(&[bad]), Err(ImageError::InvalidChange(_))), "{bad}");
        }
    }
}
