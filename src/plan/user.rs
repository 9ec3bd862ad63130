//! The run user: the image's passwd and group read, `--user` parsed, the user chosen, and the
//! passwd and group files the new image gets.

use super::RunUser;
use crate::error::{Error, Result};

pub const NONROOT_UID: u32 = 65532;

/// One passwd line.
#[derive(Debug, Clone)]
pub(super) struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    line: String,
}

pub(super) fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                line: l.to_string(),
            })
        })
        .collect()
}

/// group name → (gid, line).
pub(super) fn parse_group(text: &str) -> Vec<(String, u32, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some((f[0].to_string(), f[2].parse().ok()?, l.to_string()))
        })
        .collect()
}

/// `--user UID[:GID]`.
pub fn parse_user_flag(s: &str) -> Result<(u32, u32)> {
    let bad = || Error::Usage(format!("--user {s:?}: expected a numeric UID[:GID]"));
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (
            u.parse::<u32>().map_err(|_| bad())?,
            g.parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let u = s.parse::<u32>().map_err(|_| bad())?;
            (u, u)
        }
    };
    if u == 0 {
        return Err(Error::Usage(
            "--user 0: pare does not produce images that run as root".into(),
        ));
    }
    if g == 0 {
        return Err(Error::Usage(
            "--user with GID 0 (root group) is refused".into(),
        ));
    }
    Ok((u, g))
}

/// /etc/passwd and /etc/group for the new image: root, nobody, and the run user. The run
/// user's line: its own gecos and shell when the image has it, the chosen gid.
pub(super) fn passwd_and_group(
    user: &RunUser,
    passwd: &[PasswdEntry],
    groups: &[(String, u32, String)],
) -> (String, String) {
    // The run user's line: its own gecos and shell when the image has it, the chosen gid.
    let (gecos, shell) = passwd
        .iter()
        .find(|p| p.uid == user.uid && p.name == user.name)
        .and_then(|p| {
            let f: Vec<&str> = p.line.split(':').collect();
            Some((f.get(4)?.to_string(), f.get(6)?.to_string()))
        })
        .unwrap_or_else(|| (user.name.clone(), "/sbin/nologin".into()));
    let user_line = format!(
        "{}:x:{}:{}:{gecos}:{}:{shell}",
        user.name, user.uid, user.gid, user.home
    );
    let mut pw = String::from(
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
    );
    if user.uid != 65534 {
        pw.push_str(&user_line);
        pw.push('\n');
    }
    let group_name = groups
        .iter()
        .find(|g| g.1 == user.gid)
        .map(|g| g.0.clone())
        .unwrap_or_else(|| {
            if user.gid == user.uid {
                user.name.clone()
            } else {
                format!("g{}", user.gid)
            }
        });
    let mut gr = String::from("root:x:0:\nnobody:x:65534:\n");
    if user.gid != 65534 && user.gid != 0 {
        gr.push_str(&format!("{group_name}:x:{}:\n", user.gid));
    }
    (pw, gr)
}

pub(super) fn choose_user(
    image_user: &str,
    flag: Option<(u32, u32)>,
    passwd: &[PasswdEntry],
    groups: &[(String, u32, String)],
    warnings: &mut Vec<String>,
) -> RunUser {
    let named = |uid: u32, gid: u32, source: &str| {
        let p = passwd.iter().find(|p| p.uid == uid && p.uid != 0);
        RunUser {
            uid,
            gid,
            name: p.map_or_else(
                || {
                    if uid == NONROOT_UID {
                        "nonroot".into()
                    } else {
                        format!("u{uid}")
                    }
                },
                |p| p.name.clone(),
            ),
            home: p.map_or_else(|| "/home/nonroot".into(), |p| p.home.clone()),
            source: source.into(),
        }
    };
    if let Some((u, g)) = flag {
        return named(u, g, "--user");
    }
    let default = || named(NONROOT_UID, NONROOT_UID, "default");
    if image_user.is_empty() {
        return default();
    }
    let (u, g) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: uid,
                home: "/home/nonroot".into(),
                line: String::new(),
            })),
        Err(_) => passwd.iter().find(|p| p.name == u).cloned(),
    };
    let Some(entry) = entry else {
        warnings.push(format!("the image's User {image_user:?} is not in its /etc/passwd; running as {NONROOT_UID} instead"));
        return default();
    };
    if entry.uid == 0 {
        return default();
    }
    let gid = match g {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match groups.iter().find(|x| x.0 == g) {
                Some(x) => x.1,
                None => {
                    warnings.push(format!(
                        "the image's group {g:?} is not in its /etc/group; using gid {}",
                        entry.gid
                    ));
                    entry.gid
                }
            },
        },
    };
    if gid == 0 {
        warnings.push(format!(
            "the image's User {image_user:?} has the root group; using gid {}",
            entry.uid
        ));
    }
    let gid = if gid == 0 { entry.uid } else { gid };
    let mut u = named(entry.uid, gid, "image");
    if u.name.starts_with('u') && !entry.name.is_empty() {
        u.name = entry.name.clone();
    }
    if !entry.home.is_empty() {
        u.home = entry.home.clone();
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1001:App:/srv/app:/bin/sh\nadmin:x:0:0::/root:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:\n";

    fn pick(user: &str, flag: Option<(u32, u32)>) -> RunUser {
        let mut w = vec![];
        choose_user(
            user,
            flag,
            &parse_passwd(PASSWD),
            &parse_group(GROUP),
            &mut w,
        )
    }

    #[test]
    fn users() {
        assert_eq!(pick("", None).uid, NONROOT_UID);
        assert_eq!(pick("", None).name, "nonroot");
        assert_eq!(pick("root", None).uid, NONROOT_UID);
        assert_eq!(pick("0", None).uid, NONROOT_UID);
        assert_eq!(
            pick("admin", None).uid,
            NONROOT_UID,
            "a name mapping to uid 0 is root"
        );
        let u = pick("app", None);
        assert_eq!(
            (u.uid, u.gid, u.home.as_str(), u.source.as_str()),
            (1000, 1001, "/srv/app", "image")
        );
        assert_eq!(pick("app:staff", None).gid, 50);
        assert_eq!(pick("4242", None).uid, 4242);
        assert_eq!(pick("ghost", None).uid, NONROOT_UID);
        assert_eq!(pick("app", Some((7, 8))).uid, 7);
        assert!(parse_user_flag("0").is_err());
        assert!(parse_user_flag("10:0").is_err());
        assert!(parse_user_flag("abc").is_err());
        assert_eq!(parse_user_flag("10").unwrap(), (10, 10));
        assert_eq!(parse_user_flag("10:20").unwrap(), (10, 20));
    }
}
