//! User and group names resolved in the container's own /etc/passwd and /etc/group, as
//! Docker does for `-u NAME[:GROUP]` (and for a bare UID, whose primary group and home come
//! from passwd when it is listed there).

use std::path::Path;

use ironpod_protocol::AgentError;

use super::plan::{bad, ProcessPlan};
use super::rootfs::secure_join;

/// Spec annotation carrying the user as the caller wrote it.
pub const ANNOTATION: &str = "org.ironpod.user";

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn read(root: &Path, file: &str) -> String {
    // At most 4 MiB: these files come from the image.
    secure_join(root, file)
        .ok()
        .and_then(|p| std::fs::File::open(p).ok())
        .map(|f| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::Read::take(f, 4 << 20), &mut s);
            s
        })
        .unwrap_or_default()
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
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
            })
        })
        .collect()
}

/// (name, gid, members)
fn groups(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3].split(',').filter(|m| !m.is_empty()).map(String::from).collect();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Fills uid, gid, supplementary groups and HOME from the container's files.
pub fn resolve(root: &Path, spec_user: &str, p: &mut ProcessPlan) -> Result<(), AgentError> {
    let (user, group) = match spec_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec_user, None),
    };
    let users = passwd(&read(root, "/etc/passwd"));
    let entry = match user.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid),
        Err(_) => Some(users.iter().find(|e| e.name == user).ok_or_else(|| {
            bad(format!("unable to find user {user}: no matching entries in passwd file"))
        })?),
    };
    let all_groups = groups(&read(root, "/etc/group"));
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry.map(|e| e.uid).unwrap_or(0),
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => all_groups.iter().find(|(n, _, _)| n == g).map(|(_, id, _)| *id).ok_or_else(
                || bad(format!("unable to find group {g}: no matching entries in group file")),
            )?,
        },
        None => entry.map(|e| e.gid).unwrap_or(0),
    };
    p.uid = uid;
    p.gid = gid;
    if let Some(e) = entry {
        for (_, id, members) in &all_groups {
            if members.contains(&e.name) && *id != gid && !p.additional_gids.contains(id) {
                p.additional_gids.push(*id);
            }
        }
    }
    if !p.env.iter().any(|e| e.starts_with("HOME=")) {
        let home =
            entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()).unwrap_or_else(|| "/".into());
        p.env.push(format!("HOME={home}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ProcessPlan {
        ProcessPlan {
            args: vec!["x".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            umask: None,
            caps: Default::default(),
            no_new_privs: false,
            rlimits: vec![],
            oom_score_adj: None,
            seccomp: vec![],
            tty: false,
        }
    }

    #[test]
    fn names_numbers_groups_and_home() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbroken\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "app:x:1000:\nextra:x:2000:app,other\nweb:x:33:\n",
        )
        .unwrap();
        let mut p = plan();
        resolve(dir.path(), "app", &mut p).unwrap();
        assert_eq!((p.uid, p.gid, p.additional_gids.clone()), (1000, 1000, vec![2000]));
        assert!(p.env.contains(&"HOME=/home/app".to_string()));
        let mut p = plan();
        resolve(dir.path(), "1000:web", &mut p).unwrap();
        assert_eq!((p.uid, p.gid), (1000, 33));
        let mut p = plan();
        resolve(dir.path(), "4242", &mut p).unwrap();
        assert_eq!((p.uid, p.gid), (4242, 0));
        assert!(p.env.contains(&"HOME=/".to_string()));
        assert!(resolve(dir.path(), "ghost", &mut plan()).is_err());
        assert!(resolve(dir.path(), "app:ghosts", &mut plan()).is_err());
    }
}
