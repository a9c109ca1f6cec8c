//! Files of a container, from the host: a path's facts, its changes to the image, and what
//! the host sends and receives for `docker cp`.

use serde::{Deserialize, Serialize};

/// Facts about one path in a container (what `docker cp` shows and decides by).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    /// The last component of the path (`/` for the root).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime_secs: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nanos: u32,
    /// What a symbolic link points at (empty otherwise).
    pub link_target: String,
}

/// How a path differs from the container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The image has it; the container changed it (or something beneath it).
    Modified,
    /// New in the container.
    Added,
    /// The container removed it.
    Deleted,
}

/// One changed path of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Absolute path in the container.
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// Extracts a tar into a directory of a container ([`crate::RequestBody::WriteArchive`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteArchive {
    /// Container id.
    pub container: String,
    /// The directory to extract into (absolute, in the container).
    pub path: String,
    /// Refuse to replace a directory with a non-directory or the other way round.
    #[serde(default)]
    pub no_overwrite_dir_non_dir: bool,
    /// Own what is extracted by the container's user instead of the tar's owners.
    #[serde(default)]
    pub copy_uid_gid: bool,
}

/// Largest data frame of a [`crate::RequestBody::WriteArchive`] upload and of a
/// [`crate::RequestBody::ReadArchive`] download.
pub const ARCHIVE_CHUNK: usize = 256 * 1024;

/// The name `docker cp` gives what a path names (Go's `filepath.Base` as Docker's archive
/// code applies it): the last component, `.` for `dir/.` (a directory's content), `/` for
/// the root. The agent names a tar's top entry so; the CLI expects it so.
pub fn copy_base(path: &str) -> String {
    if path.ends_with("/.") || path == "." {
        return ".".into();
    }
    std::path::Path::new(path.trim_end_matches('/'))
        .file_name()
        .map_or("/".into(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_are_docker_s() {
        for (path, want) in [
            ("/etc/passwd", "passwd"),
            ("/etc/", "etc"),
            ("/etc/.", "."),
            ("/", "/"),
            ("rel/file", "file"),
            ("//", "/"),
        ] {
            assert_eq!(copy_base(path), want, "{path}");
        }
    }
}
