//! Networks and their address leases, in the state database (`<root>/containers.db`).
//!
//! A lease names the process that holds it (the pod's monitor, by pid and start time): a
//! lease whose holder is gone (killed, host rebooted) is free again, so no address leaks
//! when a pod dies without cleaning up.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::error::NetworkError;
use crate::ipam::Subnet;

/// Name of the network pods join when none is named.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's subnet.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// Names with a meaning of their own (`--network none|host`) that no network may take.
pub const RESERVED: [&str; 3] = ["bridge", "none", "host"];

/// One network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Its IPv4 subnet (`10.89.0.0/24`).
    pub subnet: String,
    /// The bridge's address, the pods' gateway.
    pub gateway: String,
    /// RFC 3339.
    pub created: String,
    /// No egress: its pods reach each other only (`network create --internal`).
    pub internal: bool,
    /// Its pods may reach the private address ranges (10/8, 172.16/12, 192.168/16,
    /// 100.64/10) beyond the host (`network create --allow-private`); blocked otherwise.
    pub allow_private: bool,
    /// `network create --label`.
    pub labels: BTreeMap<String, String>,
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewNetwork<'a> {
    /// Unique name.
    pub name: &'a str,
    /// IPv4 subnet; by default the first free `10.89.N.0/24`.
    pub subnet: Option<&'a str>,
    /// The bridge's address; by default the subnet's first.
    pub gateway: Option<&'a str>,
    /// No egress.
    pub internal: bool,
    /// Its pods may reach private ranges beyond the host.
    pub allow_private: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// The parsed subnet.
    pub fn subnet(&self) -> Result<Subnet, NetworkError> {
        Subnet::parse(&self.subnet)
    }

    /// The parsed gateway.
    pub fn gateway(&self) -> Result<Ipv4Addr, NetworkError> {
        self.gateway
            .parse()
            .map_err(|_| NetworkError::Invalid(format!("bad gateway {:?}", self.gateway)))
    }

    /// Name of the host network namespace that holds its bridge.
    pub fn namespace(&self) -> String {
        format!("ironpod-net-{}", &self.id[..12])
    }
}

/// A pod's address on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Network name.
    pub network: String,
    /// The address.
    pub address: Ipv4Addr,
    /// Container id.
    pub container: String,
}

/// The networks table and its leases.
pub struct NetworkStore {
    conn: Connection,
    root: std::path::PathBuf,
}

/// Logs a network event (`container`: the pod that joined or left) in the event log.
pub(crate) fn network_event(root: &Path, action: &str, net: &Network, container: Option<&str>) {
    let mut e = ironpod_events::Event::now("network", action, &net.id)
        .with("name", net.name.clone())
        .with("type", "bridge");
    if let Some(c) = container {
        e = e.with("container", c);
    }
    let _ = ironpod_events::record(root, &e);
}

fn network_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Network> {
    Ok(Network {
        id: r.get(0)?,
        name: r.get(1)?,
        subnet: r.get(2)?,
        gateway: r.get(3)?,
        created: r.get(4)?,
        internal: r.get(5)?,
        allow_private: r.get(6)?,
        // Labels are ours to write; a bad value reads as none rather than hiding the network.
        labels: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
    })
}

const NET_COLUMNS: &str = "id, name, subnet, gateway, created, internal, allow_private, labels";

impl NetworkStore {
    /// Opens (creating) the tables; the default network always exists.
    pub fn open(root: &Path) -> Result<Self, NetworkError> {
        ironpod_images::private::private_dir(root).ok();
        let conn = ironpod_images::open_sqlite(&root.join("containers.db"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS networks (
                id TEXT PRIMARY KEY NOT NULL,
                name TEXT UNIQUE NOT NULL,
                subnet TEXT NOT NULL,
                gateway TEXT NOT NULL,
                created TEXT NOT NULL,
                internal INTEGER NOT NULL DEFAULT 0,
                allow_private INTEGER NOT NULL DEFAULT 0,
                labels TEXT NOT NULL DEFAULT '{}'
            );
            CREATE TABLE IF NOT EXISTS ip_leases (
                network TEXT NOT NULL,
                address TEXT NOT NULL,
                container TEXT NOT NULL,
                holder_pid INTEGER NOT NULL,
                holder_start INTEGER,
                PRIMARY KEY (network, address)
            );",
        )?;
        // Added after networks first shipped: older databases get the columns.
        for (column, kind) in [
            ("internal", "INTEGER NOT NULL DEFAULT 0"),
            ("allow_private", "INTEGER NOT NULL DEFAULT 0"),
            ("labels", "TEXT NOT NULL DEFAULT '{}'"),
        ] {
            ironpod_images::add_column(&conn, "networks", column, kind)?;
        }
        let store = NetworkStore { conn, root: root.to_path_buf() };
        if store.find(DEFAULT_NETWORK).is_err() {
            let sub = Subnet::parse(DEFAULT_SUBNET)?;
            store.conn.execute(
                &format!(
                    "INSERT OR IGNORE INTO networks ({NET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, '{{}}')"
                ),
                params![
                    new_id()?,
                    DEFAULT_NETWORK,
                    sub.to_string(),
                    sub.first_host().to_string(),
                    ironpod_images::time::now_rfc3339()
                ],
            )?;
        }
        Ok(store)
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<Network>, NetworkError> {
        let mut stmt =
            self.conn.prepare(&format!("SELECT {NET_COLUMNS} FROM networks ORDER BY name"))?;
        let rows = stmt.query_map([], network_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A network by name, full id or unique id prefix.
    pub fn find(&self, key: &str) -> Result<Network, NetworkError> {
        let exact = self
            .conn
            .query_row(
                &format!("SELECT {NET_COLUMNS} FROM networks WHERE name = ?1 OR id = ?1"),
                [key],
                network_row,
            )
            .optional()?;
        if let Some(n) = exact {
            return Ok(n);
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NetworkError::NotFound(key.into()));
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {NET_COLUMNS} FROM networks WHERE id LIKE ?1 || '%'"))?;
        let mut found: Vec<Network> =
            stmt.query_map([key], network_row)?.collect::<Result<_, _>>()?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(NetworkError::NotFound(key.into())),
            _ => Err(NetworkError::Invalid(format!("multiple networks match {key:?}"))),
        }
    }

    /// Creates a network. Without a subnet, the first free `10.89.N.0/24` is taken; without
    /// a gateway, the subnet's first address. An `internal` one has no egress; an
    /// `allow_private` one reaches private ranges beyond the host.
    pub fn create(&mut self, new: &NewNetwork<'_>) -> Result<Network, NetworkError> {
        let NewNetwork { name, subnet, gateway, internal, allow_private, .. } = *new;
        if !ironpod_ids::valid_name(name) || name.len() > 64 {
            return Err(NetworkError::Invalid(format!(
                "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, up to 64"
            )));
        }
        if RESERVED.contains(&name) {
            return Err(NetworkError::Invalid(format!("{name:?} is a reserved network name")));
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Vec<Network> = {
            let mut stmt = tx.prepare(&format!("SELECT {NET_COLUMNS} FROM networks"))?;
            let rows = stmt.query_map([], network_row)?.collect::<Result<Vec<_>, _>>()?;
            rows
        };
        if existing.iter().any(|n| n.name == name) {
            return Err(NetworkError::Exists(name.into()));
        }
        let taken: Vec<Subnet> = existing.iter().filter_map(|n| n.subnet().ok()).collect();
        let sub = match subnet {
            Some(s) => {
                let sub = Subnet::parse(s)?;
                if let Some(n) =
                    existing.iter().find(|n| n.subnet().is_ok_and(|t| t.overlaps(&sub)))
                {
                    return Err(NetworkError::Invalid(format!(
                        "subnet {sub} overlaps network {} ({})",
                        n.name, n.subnet
                    )));
                }
                sub
            }
            None => (0..=255u8)
                .map(|i| Subnet { network: Ipv4Addr::new(10, 89, i, 0), prefix: 24 })
                .find(|s| !taken.iter().any(|t| t.overlaps(s)))
                .ok_or_else(|| {
                    NetworkError::Invalid(
                        "no free 10.89.N.0/24 subnet: name one with --subnet".into(),
                    )
                })?,
        };
        let gw = match gateway {
            Some(g) => {
                let ip: Ipv4Addr = g
                    .parse()
                    .map_err(|_| NetworkError::Invalid(format!("invalid gateway {g:?}")))?;
                if !sub.is_host(ip) {
                    return Err(NetworkError::Invalid(format!(
                        "gateway {ip} is not a host address of {sub}"
                    )));
                }
                ip
            }
            None => sub.first_host(),
        };
        let net = Network {
            id: new_id()?,
            name: name.into(),
            subnet: sub.to_string(),
            gateway: gw.to_string(),
            created: ironpod_images::time::now_rfc3339(),
            internal,
            allow_private,
            labels: new.labels.clone(),
        };
        let labels = serde_json::to_string(&net.labels)
            .map_err(|e| NetworkError::Invalid(format!("labels: {e}")))?;
        tx.execute(
            &format!(
                "INSERT INTO networks ({NET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                net.id,
                net.name,
                net.subnet,
                net.gateway,
                net.created,
                net.internal,
                net.allow_private,
                labels
            ],
        )?;
        tx.commit()?;
        network_event(&self.root, "create", &net, None);
        Ok(net)
    }

    /// Removes a network that no live pod uses (the default one stays).
    pub fn remove(&mut self, key: &str) -> Result<Network, NetworkError> {
        let net = self.find(key)?;
        if net.name == DEFAULT_NETWORK {
            return Err(NetworkError::Invalid(format!(
                "{DEFAULT_NETWORK} is the default network and cannot be removed"
            )));
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let users = live_leases(&tx, &net.name)?;
        if !users.is_empty() {
            let ids: Vec<&str> =
                users.iter().map(|l| l.container.get(..12).unwrap_or(&l.container)).collect();
            return Err(NetworkError::InUse(net.name, ids.join(", ")));
        }
        tx.execute("DELETE FROM ip_leases WHERE network = ?1", [&net.name])?;
        tx.execute("DELETE FROM networks WHERE id = ?1", [&net.id])?;
        tx.commit()?;
        Ok(net)
    }

    /// Leases the lowest free address of `network` to `container`, held by the process
    /// `holder` (pid, start time). Leases of gone holders are freed first.
    pub fn lease(
        &mut self,
        network: &Network,
        container: &str,
        holder: (i32, Option<i64>),
    ) -> Result<Ipv4Addr, NetworkError> {
        let sub = network.subnet()?;
        let gw = network.gateway()?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stale = Vec::new();
        let mut used = HashSet::new();
        for (addr, owner, live) in lease_rows(&tx, &network.name)? {
            if owner == container || !live {
                stale.push(addr);
            } else if let Ok(ip) = addr.parse() {
                used.insert(ip);
            }
        }
        for a in stale {
            tx.execute(
                "DELETE FROM ip_leases WHERE network = ?1 AND address = ?2",
                params![network.name, a],
            )?;
        }
        let ip = sub
            .lowest_free(gw, &used)
            .ok_or_else(|| NetworkError::Exhausted(network.name.clone()))?;
        tx.execute(
            "INSERT INTO ip_leases (network, address, container, holder_pid, holder_start)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![network.name, ip.to_string(), container, holder.0, holder.1],
        )?;
        tx.commit()?;
        Ok(ip)
    }

    /// Frees every lease of `container`.
    pub fn release(&self, container: &str) -> Result<(), NetworkError> {
        self.conn.execute("DELETE FROM ip_leases WHERE container = ?1", [container])?;
        Ok(())
    }

    /// The networks `container` holds addresses on.
    pub fn networks_of(&self, container: &str) -> Result<Vec<String>, NetworkError> {
        let mut stmt =
            self.conn.prepare("SELECT DISTINCT network FROM ip_leases WHERE container = ?1")?;
        let rows = stmt.query_map([container], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The leases of live pods on `network`.
    pub fn leases(&self, network: &str) -> Result<Vec<Lease>, NetworkError> {
        live_leases(&self.conn, network)
    }
}

/// Every lease row of `network`, by address: (address, container, whether its holder lives).
fn lease_rows(
    conn: &Connection,
    network: &str,
) -> Result<Vec<(String, String, bool)>, NetworkError> {
    let mut stmt = conn.prepare(
        "SELECT address, container, holder_pid, holder_start FROM ip_leases WHERE network = ?1
         ORDER BY address",
    )?;
    let rows = stmt.query_map([network], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i32>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (addr, container, pid, start) = row?;
        out.push((addr, container, ironpod_ids::process_alive(pid, start)));
    }
    Ok(out)
}

fn live_leases(conn: &Connection, network: &str) -> Result<Vec<Lease>, NetworkError> {
    Ok(lease_rows(conn, network)?
        .into_iter()
        .filter(|(_, _, live)| *live)
        .filter_map(|(addr, container, _)| {
            let address = addr.parse().ok()?;
            Some(Lease { network: network.into(), address, container })
        })
        .collect())
}

fn new_id() -> Result<String, NetworkError> {
    ironpod_ids::new_id().map_err(|e| NetworkError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain<'a>(
        name: &'a str,
        subnet: Option<&'a str>,
        gateway: Option<&'a str>,
    ) -> NewNetwork<'a> {
        NewNetwork { name, subnet, gateway, ..Default::default() }
    }

    fn me() -> (i32, Option<i64>) {
        let pid = std::process::id() as i32;
        (pid, ironpod_ids::process_start(pid))
    }

    #[test]
    fn default_network_create_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(dir.path()).unwrap();
        let def = s.find(DEFAULT_NETWORK).unwrap();
        assert_eq!(def.subnet, DEFAULT_SUBNET);
        assert_eq!(def.gateway, "10.88.0.1");
        drop(s);
        let mut s = NetworkStore::open(dir.path()).unwrap();
        assert_eq!(s.find(DEFAULT_NETWORK).unwrap().id, def.id, "made once");
        let a = s.create(&plain("a", None, None)).unwrap();
        assert_eq!((a.subnet.as_str(), a.gateway.as_str()), ("10.89.0.0/24", "10.89.0.1"));
        let b = s.create(&plain("b", None, None)).unwrap();
        assert_eq!(b.subnet, "10.89.1.0/24");
        let c = s.create(&plain("c", Some("192.168.50.0/24"), Some("192.168.50.254"))).unwrap();
        assert_eq!(c.gateway, "192.168.50.254");
        assert!(matches!(s.create(&plain("a", None, None)), Err(NetworkError::Exists(_))));
        for (name, sub, gw) in [
            ("none", None, None),
            ("bridge", None, None),
            ("x/y", None, None),
            ("d", Some("10.89.0.128/25"), None),
            ("d", Some("10.90.0.0/24"), Some("10.91.0.1")),
            ("d", Some("10.90.0.0/24"), Some("10.90.0.255")),
            ("d", Some("10.90.0.0/24"), Some("nope")),
        ] {
            assert!(s.create(&plain(name, sub, gw)).is_err(), "{name} {sub:?} {gw:?}");
        }
        assert_eq!(s.find(&a.id[..10]).unwrap().name, "a");
        let names: Vec<String> = s.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["a", "b", "bridge", "c"]);
        assert!(s.remove("bridge").is_err());
        s.remove("b").unwrap();
        // (By name: "b" may also begin another network's hex id.)
        assert!(s.list().unwrap().iter().all(|n| n.name != "b"));
        assert_eq!(s.create(&plain("b2", None, None)).unwrap().subnet, "10.89.1.0/24", "reused");
    }

    #[test]
    fn leases_are_lowest_free_and_freed_with_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = NetworkStore::open(dir.path()).unwrap();
        let n = s.create(&plain("n", Some("10.90.0.0/29"), None)).unwrap();
        let ip1 = s.lease(&n, "c1", me()).unwrap();
        let ip2 = s.lease(&n, "c2", me()).unwrap();
        assert_eq!((ip1.to_string(), ip2.to_string()), ("10.90.0.2".into(), "10.90.0.3".into()));
        assert_eq!(s.lease(&n, "c1", me()).unwrap(), ip1, "a pod's new lease replaces its old");
        // A holder that is gone (pid 0 never is a process of ours; a wrong start time).
        let dead = (std::process::id() as i32, Some(-1));
        let ip3 = s.lease(&n, "c3", dead).unwrap();
        assert_eq!(ip3.to_string(), "10.90.0.4");
        assert_eq!(s.leases("n").unwrap().len(), 2, "the dead holder's lease is not live");
        assert_eq!(s.lease(&n, "c4", me()).unwrap(), ip3, "and is given again");
        assert!(matches!(s.remove("n"), Err(NetworkError::InUse(..))));
        for c in ["c1", "c2", "c4"] {
            s.release(c).unwrap();
        }
        for i in 0..5 {
            s.lease(&n, &format!("f{i}"), me()).unwrap();
        }
        assert!(matches!(s.lease(&n, "f5", me()), Err(NetworkError::Exhausted(_))));
        for i in 0..5 {
            s.release(&format!("f{i}")).unwrap();
        }
        s.remove("n").unwrap();
    }
}
