//! virtio-net: a pod VM's card on a tap device inside a network namespace the test creates
//! (the only place test traffic may go, besides loopback).

use std::time::Duration;

use ironpod_net::podnet;
use ironpod_pods::agent_client::ClientError;
use ironpod_pods::vm::{RunningVm, VmSpec};
use ironpod_protocol::{ErrorKind, NetInterface, NetworkConfig};
use ironpod_tests::netns::Netns;
use ironpod_tests::require_linux_kvm;
use ironpod_vmm::config::NetConfig;

const MAC: &str = "02:00:0a:e7:00:02";

#[test]
fn the_guest_answers_on_its_tap_inside_a_test_namespace() {
    let _w = require_linux_kvm();
    let ns = Netns::new("ping");
    ns.ok(&["ip", "link", "set", "lo", "up"]);
    ns.ok(&["ip", "tuntap", "add", "dev", "tap0", "mode", "tap", "vnet_hdr"]);
    ns.ok(&["ip", "addr", "add", "10.231.0.1/24", "dev", "tap0"]);
    ns.ok(&["ip", "link", "set", "tap0", "up"]);

    let mut spec = VmSpec::with_defaults().expect("guest assets installed");
    spec.net =
        vec![NetConfig { tap: "tap0".into(), mac: Some(MAC.into()), mtu: 1500, netns: None }];
    spec.netns = Some(ns.path());
    let mut vm = RunningVm::start(&spec).expect("start VMM");
    let mut agent = vm.wait_agent(Duration::from_secs(120)).unwrap_or_else(|e| {
        let console = std::fs::read_to_string(vm.dir().join("console.log")).unwrap_or_default();
        panic!("agent not ready: {e}\nVMM: {}\nconsole:\n{console}", vm.vmm_log())
    });

    // Hostile or wrong configurations are refused before anything changes.
    let card = |mac: &str, address: &str| NetworkConfig {
        interfaces: vec![NetInterface {
            mac: mac.into(),
            address: address.into(),
            mtu: 1500,
            replaces: None,
        }],
        gateway: Some("10.231.0.1".into()),
    };
    for (cfg, kind) in [
        (card("02:00:00:00:00:99", "10.231.0.2/24"), ErrorKind::NotFound),
        (card(MAC, "10.231.0.2"), ErrorKind::BadRequest),
        (card(MAC, "10.231.0.2/40"), ErrorKind::BadRequest),
        (card(MAC, "224.0.0.1/24"), ErrorKind::BadRequest),
    ] {
        match agent.configure_network(&cfg) {
            Err(ClientError::Agent(e)) => assert_eq!(e.kind, kind, "{cfg:?}: {e:?}"),
            other => panic!("{cfg:?}: {other:?}"),
        }
    }
    agent.configure_network(&card(MAC, "10.231.0.2/24")).expect("configure eth0");

    // ICMP both ways through the tap: echo requests in, replies out; then a 9000-byte
    // ping, which the guest must take in several receive buffers and reassemble.
    let out = ns.ok(&["busybox", "ping", "-c", "3", "-W", "5", "10.231.0.2"]);
    assert!(out.contains("3 packets received"), "{out}");
    let out = ns.ok(&["busybox", "ping", "-c", "1", "-s", "9000", "-W", "5", "10.231.0.2"]);
    assert!(out.contains("1 packets received"), "{out}");
    // The host's tap saw the guest's MAC.
    let neigh = ns.ok(&["ip", "neigh", "show", "dev", "tap0"]);
    assert!(neigh.contains(MAC), "{neigh}");

    let status = vm.shutdown(&mut agent, Duration::from_secs(30)).expect("shutdown");
    assert_eq!(status.code(), Some(0), "VMM log: {}", vm.vmm_log());
}

#[test]
fn the_vm_takes_the_place_of_a_cni_style_veth() {
    let _w = require_linux_kvm();
    // What CNI's bridge plugin leaves a pod: a namespace with eth0 (a veth whose peer is
    // elsewhere), its address and a default route.
    let pod = Netns::new("pod");
    let peer = Netns::new("peer");
    pod.ok(&["ip", "link", "set", "lo", "up"]);
    pod.ok(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "vpeer"]);
    pod.ok(&["ip", "link", "set", "vpeer", "netns", &peer.name]);
    pod.ok(&["ip", "addr", "add", "10.232.0.2/24", "dev", "eth0"]);
    pod.ok(&["ip", "link", "set", "eth0", "up"]);
    pod.ok(&["ip", "route", "add", "default", "via", "10.232.0.1"]);
    peer.ok(&["ip", "addr", "add", "10.232.0.1/24", "dev", "vpeer"]);
    peer.ok(&["ip", "link", "set", "vpeer", "up"]);

    let nic = podnet::connect_tap(&pod.path(), "eth0", "tap0").expect("connect the tap");
    let veth_mac = pod.ok(&["cat", "/sys/class/net/eth0/address"]);
    assert_eq!(nic.mac, veth_mac.trim());
    assert_eq!(nic.address, Some(("10.232.0.2".parse().unwrap(), 24)));
    assert_eq!(nic.gateway, Some("10.232.0.1".parse().unwrap()));
    assert_eq!(nic.mtu, 1500);
    assert!(podnet::connect_tap(&pod.path(), "nope0", "tap1").is_err());

    let mut spec = VmSpec::with_defaults().expect("guest assets installed");
    spec.net = vec![NetConfig {
        tap: "tap0".into(),
        mac: Some(nic.mac.clone()),
        mtu: nic.mtu,
        netns: None,
    }];
    spec.netns = Some(pod.path());
    let mut vm = RunningVm::start(&spec).expect("start VMM");
    let mut agent = vm.wait_agent(Duration::from_secs(120)).unwrap_or_else(|e| {
        let console = std::fs::read_to_string(vm.dir().join("console.log")).unwrap_or_default();
        panic!("agent not ready: {e}\nVMM: {}\nconsole:\n{console}", vm.vmm_log())
    });
    agent.configure_network(&nic.network_config()).expect("configure eth0");
    // The peer reaches the guest at the veth's address: the frames cross the veth, are
    // redirected to the tap and answered by the guest's kernel — not by the pod
    // namespace's own stack, which still holds the address but never sees a frame.
    let rx = |agent: &mut ironpod_pods::agent_client::AgentClient| -> u64 {
        let b = agent.read_file("/sys/class/net/eth0/statistics/rx_packets").unwrap();
        String::from_utf8_lossy(&b).trim().parse().unwrap()
    };
    let before = rx(&mut agent);
    let out = peer.ok(&["busybox", "ping", "-c", "3", "-W", "5", "10.232.0.2"]);
    assert!(out.contains("3 packets received"), "{out}");
    assert!(rx(&mut agent) >= before + 3, "the guest did not receive the pings");
    let pod_rx = pod.ok(&["cat", "/sys/class/net/eth0/statistics/rx_packets"]);
    let filters = pod.ok(&["tc", "-s", "filter", "show", "dev", "eth0", "ingress"]);
    assert!(filters.contains("protocol all"), "{filters}");
    assert!(!filters.contains("rule hit 0 "), "the redirect never matched: {filters} ({pod_rx})");
    let status = vm.shutdown(&mut agent, Duration::from_secs(30)).expect("shutdown");
    assert_eq!(status.code(), Some(0), "VMM log: {}", vm.vmm_log());
}
