//! Nodes: named endpoints that listen, dial, serve on every connection and call each other by
//! name. Real sockets; nothing sleeps: tests wait on the directory.

mod support;

use std::time::Duration;

use support::within;
use zrpc_core::{Code, Context};
use zrpc_transport::{Backoff, Node};

/// What every node in these tests serves.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Whoami {
    /// Who answers, and who they think called.
    async fn whoami(&self, ctx: &Context) -> String;
}

#[derive(Clone, Debug)]
struct Me(&'static str);

impl Whoami for Me {
    async fn whoami(&self, ctx: &Context) -> String {
        format!("{} for {}", self.0, ctx.caller())
    }
}

async fn node(name: &'static str, listen: bool, dial: &[&zrpc_transport::Address]) -> Node {
    let mut builder = Node::builder(name)
        .add_service(WhoamiServer::new(Me(name)))
        .channel(|c| c.backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(20))));
    if listen {
        builder = builder.listen("tcp://127.0.0.1:0");
    }
    for address in dial {
        builder = builder.connect((*address).clone());
    }
    builder.start().await.expect("starts")
}

#[tokio::test]
async fn nodes_call_each_other_by_name_whichever_side_dialed() {
    let hub = node("hub", true, &[]).await;
    let hub_at = hub.local_addr().expect("listens").clone();
    let left = node("left", false, &[&hub_at]).await;
    let right = node("right", true, &[&hub_at]).await;

    within("hub sees both", hub.peers().wait_for("left")).await;
    within("hub sees both", hub.peers().wait_for("right")).await;
    within("left sees hub", left.peers().wait_for("hub")).await;
    // Dialed connection, this way and back.
    assert_eq!(WhoamiClient::new(left.peer("hub")).whoami().await, Ok("hub for left".to_owned()));
    assert_eq!(WhoamiClient::new(hub.peer("left")).whoami().await, Ok("left for hub".to_owned()));
    assert_eq!(WhoamiClient::new(hub.peer("right")).whoami().await, Ok("right for hub".to_owned()));
    // left and right are not connected to each other.
    let status = WhoamiClient::new(left.peer("right")).whoami().await.expect_err("not connected");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.is_unprocessed() && status.message().contains("\"right\""), "{status:?}");

    left.shutdown().await;
    right.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_node_dials_a_peer_that_comes_up_later_and_after_it_restarts() {
    // Take a free port, then let it go: the peer is not there yet when the node starts.
    let probe = node("probe", true, &[]).await;
    let address = probe.local_addr().expect("listens").clone();
    probe.shutdown().await;

    let dialer = node("dialer", false, &[&address]).await;
    let late = Node::builder("late").add_service(WhoamiServer::new(Me("late"))).listen(address.clone());
    let late = late.start().await.expect("the port is free again");
    within("the dialer finds the late node", dialer.peers().wait_for("late")).await;
    assert_eq!(WhoamiClient::new(dialer.peer("late")).whoami().await, Ok("late for dialer".to_owned()));

    // The peer goes away and comes back: the dialer's channel connects again and lists it anew.
    let mut watch = dialer.peers().watch();
    late.shutdown().await;
    loop {
        match within("the dialer sees it leave", watch.next()).await {
            Some(zrpc_transport::PeerEvent::Left { name, .. }) if &*name == "late" => break,
            Some(_) => {}
            None => panic!("the directory lives"),
        }
    }
    let again = Node::builder("late").add_service(WhoamiServer::new(Me("late again"))).listen(address);
    let again = again.start().await.expect("the port is free again");
    within("the dialer reconnects", dialer.peers().wait_for("late")).await;
    assert_eq!(WhoamiClient::new(dialer.peer("late")).whoami().await, Ok("late again for dialer".to_owned()));

    dialer.shutdown().await;
    again.shutdown().await;
}

#[tokio::test]
async fn two_nodes_that_dial_each_other_use_both_connections() {
    let a = node("a", true, &[]).await;
    let a_at = a.local_addr().expect("listens").clone();
    let b = node("b", true, &[&a_at]).await;
    within("a sees b", a.peers().wait_for("b")).await;
    // Now a dials b as well: two connections between them, both listed on each side.
    let b_at = b.local_addr().expect("listens").clone();
    let a2 = Node::builder("a").add_service(WhoamiServer::new(Me("a2"))).connect(b_at).start().await.expect("starts");
    let mut watch = b.peers().watch();
    let mut joined = 0;
    while joined < 2 {
        if let Some(zrpc_transport::PeerEvent::Joined { name, .. }) = within("b lists a twice", watch.next()).await
            && &*name == "a"
        {
            joined += 1;
        }
    }
    assert_eq!(b.peers().len(), 2);
    assert_eq!(WhoamiClient::new(b.peer("a")).whoami().await, Ok("a2 for b".to_owned()), "the newest answers");
    let mut all = b.peers().broadcast(|peer| async move { WhoamiClient::new(peer).whoami().await }).await;
    all.sort_by_key(|(_, answer)| answer.clone().unwrap_or_default());
    let answers: Vec<_> = all.into_iter().map(|(_, answer)| answer.expect("answered")).collect();
    assert_eq!(answers, ["a for b", "a2 for b"]);
    a2.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}
