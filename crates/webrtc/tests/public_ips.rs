//! Public addresses learnt at run time (`WebrtcServer::set_public_ips`, from the engine's reach
//! task): advertised with the bound ports besides the machine's own, replaced on each call.

use std::net::SocketAddr;

use onair_webrtc::{WebrtcConfig, WebrtcServer};

#[tokio::test]
async fn learnt_public_ips_join_the_candidates_with_the_bound_ports() {
    let config = WebrtcConfig {
        udp: "127.0.0.1:0".parse().unwrap(),
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..WebrtcConfig::default()
    };
    let server = WebrtcServer::start_with_shards(config, 1).await.unwrap();
    let (udp, tcp) = (server.udp_addr().port(), server.tcp_addr().unwrap().port());
    let own = vec![
        ("udp".to_string(), SocketAddr::from(([127, 0, 0, 1], udp))),
        ("tcp".to_string(), SocketAddr::from(([127, 0, 0, 1], tcp))),
    ];
    assert_eq!(server.candidates(), own);

    server.set_public_ips(vec!["11.77.0.1".parse().unwrap()]);
    let mut with_public = own.clone();
    with_public.push(("udp".into(), SocketAddr::from(([11, 77, 0, 1], udp))));
    with_public.push(("tcp".into(), SocketAddr::from(([11, 77, 0, 1], tcp))));
    assert_eq!(server.candidates(), with_public);

    // An address already advertised is not repeated; an empty list takes the public ones away.
    server.set_public_ips(vec!["127.0.0.1".parse().unwrap()]);
    assert_eq!(server.candidates(), own);
    server.set_public_ips(vec!["11.77.0.2".parse().unwrap()]);
    assert_eq!(server.candidates().len(), 4);
    server.set_public_ips(Vec::new());
    assert_eq!(server.candidates(), own);
    server.shutdown().await;
}
