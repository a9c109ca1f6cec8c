//! CLI pods on ironpod's own networks: pods of one network talk (by address and by name),
//! `--network none` has no route, published ports reach a server in a pod from the host's
//! loopback. Traffic stays on loopback and inside the namespaces ironpod makes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ironpod_tests::web::{free_port, http_get, web_server};
use ironpod_tests::{require_linux_kvm, text, TestRoot};

#[test]
fn pods_on_a_network_talk_and_network_none_has_no_route() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let id = root.ok(&["network", "create", "--subnet", "10.213.5.0/24", "testnet"]);
    assert_eq!(id.trim().len(), 64);
    let ls = root.ok(&["network", "ls"]);
    assert!(ls.contains("testnet") && ls.contains("10.213.5.0/24") && ls.contains("bridge"));
    let out = root.ironpod(&["network", "create", "--subnet", "10.213.5.128/25", "other"]);
    assert!(!out.status.success(), "an overlapping subnet is refused");

    let web = web_server("hello-from-web", 10);
    root.ok(&["run", "-d", "--name", "web", "--network", "testnet", "demo", "sh", "-c", &web]);
    let w = root.inspect("web");
    let web_id = w["Id"].as_str().unwrap().to_string();
    assert_eq!(w["NetworkSettings"]["IPAddress"], "10.213.5.2", "{w:#}");
    assert_eq!(w["NetworkSettings"]["Gateway"], "10.213.5.1");
    assert_eq!(w["HostConfig"]["NetworkMode"], "testnet");

    // A second pod reaches the first, and finds it by name in its /etc/hosts (the demo
    // image's static busybox cannot resolve names itself, nor run wget: glibc's NSS is not
    // in it).
    let out = root.ironpod(&[
        "run",
        "--rm",
        "--network",
        "testnet",
        "--hostname",
        "client",
        "--add-host",
        "extra.example:10.213.5.77",
        "demo",
        "sh",
        "-c",
        "ping -c 2 -W 10 10.213.5.2 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 20 10.213.5.2 80 && cat /etc/hosts && \
         cat /etc/hostname && ip -4 addr show eth0 && ip route",
    ]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(s.contains("2 packets received"), "{s}");
    assert!(s.contains("hello-from-web"), "{s}");
    assert!(s.contains("10.213.5.2\tweb\n"), "peers by name: {s}");
    assert!(s.contains("10.213.5.77\textra.example\n"), "{s}");
    assert!(s.contains("10.213.5.3\tclient\n"), "own entry: {s}");
    assert!(s.contains("\nclient\n"), "/etc/hostname: {s}");
    assert!(s.contains("inet 10.213.5.3/24"), "{s}");
    assert!(s.contains("default via 10.213.5.1"), "{s}");
    let out = root.ok(&["network", "inspect", "testnet"]);
    assert!(out.contains("10.213.5.2"), "{out}");

    // --network none: loopback only, no route anywhere.
    let out = root.ironpod(&[
        "run",
        "--rm",
        "--network",
        "none",
        "demo",
        "sh",
        "-c",
        "cat /proc/net/dev; echo routes:; ip route; echo end-routes; ping -c 1 -W 2 10.213.5.2; \
         echo ping=$?; ping -c 1 -W 2 127.0.0.1 >/dev/null; echo lo=$?",
    ]);
    let s = text(&out.stdout);
    let e = text(&out.stderr);
    assert!(out.status.success(), "{s}{e}");
    assert!(s.contains("lo:") && !s.contains("eth0"), "{s}");
    // `ip route` (IPv4, main table) prints nothing: nothing between the two markers.
    assert!(s.contains("\nroutes:\nend-routes\n"), "no routes: {s}");
    assert!(s.contains("ping=1") || s.contains("ping=2"), "{s}");
    assert!(e.contains("unreachable"), "{e}");
    assert!(s.contains("lo=0"), "loopback works: {s}");
    let out = root.ironpod(&["run", "--rm", "--network", "none", "-p", "8080:80", "demo", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("cannot publish"), "{}", text(&out.stderr));
    for bad in ["host", "nosuchnet"] {
        let out = root.ironpod(&["run", "--rm", "--network", bad, "demo", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}");
    }

    // In use: not removable; afterwards it is, and nothing of the pods stays on the host.
    let out = root.ironpod(&["network", "rm", "testnet"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("active endpoints"), "{}", text(&out.stderr));
    root.ok(&["rm", "-f", "web"]);
    root.ok(&["network", "rm", "testnet"]);
    // This test's namespaces only: the other tests of this binary run at the same time,
    // with networks and pods of their own.
    let ours = [format!("ironpod-net-{}", &id.trim()[..12]), ironpod_net::pod_namespace(&web_id)];
    let leftovers: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!leftovers.iter().any(|n| ours.contains(n)), "namespaces left: {leftovers:?}");
}

#[test]
fn a_published_port_reaches_a_web_server_in_the_pod() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let port = free_port();
    let web = web_server("hello-through-the-proxy", 200_000);
    let spec = format!("127.0.0.1:{port}:80");
    let id = root.ok(&["run", "-d", "-p", &spec, "-p", "81", "demo", "sh", "-c", &web]);
    let id = id.trim();
    let s = http_get(port, "/");
    assert!(s.contains("200 OK") && s.contains("hello-through-the-proxy"), "{s}");
    // A larger answer arrives whole.
    let s = http_get(port, "/big");
    let body = s.split("\r\n\r\n").nth(1).unwrap_or_default();
    let want: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(body == want, "body of {} bytes, want {}", body.len(), want.len());
    // `port` and inspect tell where the ports are; the one without a host port got one.
    let out = root.ok(&["port", id]);
    assert!(out.contains(&format!("80/tcp -> 127.0.0.1:{port}")), "{out}");
    let auto = root.ok(&["port", id, "81/tcp"]);
    let auto: u16 = auto.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(auto, 0);
    let i = root.inspect(id);
    assert_eq!(i["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"], port.to_string(), "{i:#}");
    assert_eq!(i["NetworkSettings"]["IPAddress"], "10.88.0.2", "default network");
    // The same host port for a second pod: refused, clearly.
    let out = root.ironpod(&["run", "--rm", "-p", &spec, "demo", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains(&format!("127.0.0.1:{port}")), "{}", text(&out.stderr));
    root.ok(&["rm", "-f", id]);
    // The port is free again once the pod is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} still taken after rm");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pods_reach_outside_through_nat_and_internal_networks_do_not() {
    use ironpod_tests::netns::Netns;
    use std::process::{Command, Stdio};
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    // This test's ironpod runs in a namespace of its own ("the host"), whose only way out
    // leads to another ("outside"). Outside has no route back to the pods' addresses: its
    // answers arrive only because the host masquerades them.
    let host = Netns::new("egress-host");
    let outside = Netns::new("egress-out");
    host.ok(&[
        "ip",
        "link",
        "add",
        "eh0",
        "type",
        "veth",
        "peer",
        "name",
        "eo0",
        "netns",
        &outside.name,
    ]);
    for (ns, addr) in [(&host, "192.0.2.2/24"), (&outside, "192.0.2.1/24")] {
        let dev = if addr.starts_with("192.0.2.2") { "eh0" } else { "eo0" };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns.ok(&["ip", "addr", "add", addr, "dev", dev]);
        ns.ok(&["ip", "link", "set", dev, "up"]);
    }
    host.ok(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
    // A new namespace copies forwarding from the first one, where earlier pods may have
    // turned it on: this host starts with it off, as a fresh machine does.
    host.ok(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    // Outside also holds a cloud metadata address and a private one; the private one is the
    // host's name server (`ip netns exec` shows the namespace's own resolv.conf).
    for a in ["169.254.169.254/32", "10.213.77.1/32"] {
        outside.ok(&["ip", "addr", "add", a, "dev", "eo0"]);
    }
    let etc = PathBuf::from("/etc/netns").join(&host.name);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 10.213.77.1\n").unwrap();
    let www = tempfile::tempdir_in(root.path()).unwrap();
    std::fs::write(www.path().join("index.html"), "hello-outside\n").unwrap();
    let serve = |ns: &str, port: &str| {
        Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "httpd", "-f", "-p", port, "-h"])
            .arg(www.path())
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Outside on 8080 and on 53 (standing in for DNS), the host itself on 8081.
    let mut servers =
        [serve(&outside.name, "8080"), serve(&outside.name, "53"), serve(&host.name, "8081")];
    let ironpod = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &host.name])
            .arg(ironpod_tests::bin("ironpod"))
            .env("IRONPOD_ROOT", root.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let fetch = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 10 192.0.2.1 8080 2>&1";

    let out = ironpod(&["run", "--rm", "demo", "sh", "-c", fetch]);
    let s = text(&out.stdout);
    if !s.contains("hello-outside") {
        let v: serde_json::Value =
            serde_json::from_slice(&ironpod(&["network", "inspect", "bridge"]).stdout).unwrap();
        let ns = v[0]["Namespace"].as_str().unwrap_or_default().to_string();
        let show = "ip -s link; ip addr; ip route; nft list ruleset; \
                    cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/proxy_arp; ip neigh";
        let diag = |n: &str| {
            let o = Command::new("ip").args(["netns", "exec", n, "sh", "-c", show]).output();
            o.map(|o| text(&o.stdout) + &text(&o.stderr)).unwrap_or_default()
        };
        panic!(
            "a pod on the default network did not reach outside: {s}{}\n== host\n{}\n== network\n{}",
            text(&out.stderr),
            diag(&host.name),
            diag(&ns)
        );
    }
    let table = ironpod_net::egress::table_name(root.path());
    let rules = host.ok(&["nft", "list", "table", "ip", &table]);
    assert!(rules.contains("10.88.0.0/16") && rules.contains("masquerade"), "{rules}");
    // Forwarding was off in this "host": ironpod turned it on, and guards it.
    assert!(rules.contains("iifname != \"ipu*\" oifname != \"ipu*\" drop"), "{rules}");

    // What a pod may reach: not the host, not link-local, not private ranges unless its
    // network allows them, but the host's name server for DNS.
    let probe = "for t in 192.0.2.1:8080 192.0.2.2:8081 169.254.169.254:8080 10.213.77.1:8080 \
                 10.213.77.1:53; do printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' \
                 | nc -w 3 ${t%:*} ${t#*:} 2>/dev/null | grep -q hello-outside \
                 && echo \"$t open\" || echo \"$t closed\"; done";
    let reach = |net: &str| {
        let out = ironpod(&["run", "--rm", "--network", net, "demo", "sh", "-c", probe]);
        text(&out.stdout) + &text(&out.stderr)
    };
    assert_eq!(
        reach("bridge"),
        "192.0.2.1:8080 open\n192.0.2.2:8081 closed\n169.254.169.254:8080 closed\n\
         10.213.77.1:8080 closed\n10.213.77.1:53 open\n"
    );
    let out = ironpod(&["network", "create", "--allow-private", "lan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        reach("lan"),
        "192.0.2.1:8080 open\n192.0.2.2:8081 closed\n169.254.169.254:8080 closed\n\
         10.213.77.1:8080 open\n10.213.77.1:53 open\n"
    );
    assert!(ironpod(&["network", "rm", "lan"]).status.success());

    // An internal network has no way out (and its subnet is not masqueraded).
    let out = ironpod(&["network", "create", "--internal", "--subnet", "10.213.9.0/24", "inside"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ironpod(&["run", "--rm", "--network", "inside", "demo", "sh", "-c", fetch]);
    let s = text(&out.stdout);
    assert!(!s.contains("hello-outside"), "an internal network reached outside: {s}");
    assert!(s.contains("unreachable"), "{s}");
    let v: serde_json::Value =
        serde_json::from_slice(&ironpod(&["network", "inspect", "inside"]).stdout).unwrap();
    assert_eq!(v[0]["Internal"], true);
    assert!(!host.ok(&["nft", "list", "table", "ip", &table]).contains("10.213.9.0"));
    assert!(ironpod(&["network", "rm", "inside"]).status.success());

    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let _ = std::fs::remove_dir_all(&etc);
    // The default network's namespace (and the uplink with it) goes with the test root.
    drop(root);
}
