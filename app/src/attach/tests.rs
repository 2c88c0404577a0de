use wsdscope_trainer::{Command, DecayShape, ForkLength, ForkRequest};

use super::{Reply, Request};

#[test]
fn every_request_reads_back_as_it_was_written() {
    let fork = ForkRequest {
        parent: 0,
        length: ForkLength::Steps(200),
        shape: DecayShape::Linear,
        floor: 0.1,
        at_step: None,
    };
    for r in [
        Request::Hello {
            protocol: 1,
            token: Some("ab".into()),
        },
        Request::Hello {
            protocol: 1,
            token: None,
        },
        Request::Pause,
        Request::Resume,
        Request::Stop,
        Request::Fork(fork.clone()),
        Request::WsdS { parent: 1 },
        Request::Probe { run: 2 },
    ] {
        assert_eq!(Request::parse(&r.to_line()), Ok(r));
    }
    assert_eq!(
        Request::parse(
            r#"{"cmd":"fork","parent":0,"length":{"steps":200},"shape":"linear","floor":0.1}"#
        )
        .unwrap()
        .command(),
        Some(Command::Fork(fork))
    );
    assert_eq!(
        Request::parse(r#"{"cmd":"wsd_s","parent":3}"#)
            .unwrap()
            .command(),
        Some(Command::ForkResume { parent: 3 })
    );
}

#[test]
fn garbage_and_unknown_commands_are_named_in_the_refusal() {
    let e = Request::parse("GET / HTTP/1.1").unwrap_err();
    assert!(e.starts_with("unreadable message"), "{e}");
    let e = Request::parse(r#"{"hello":1}"#).unwrap_err();
    assert!(e.contains("no \"cmd\""), "{e}");
    let e = Request::parse(r#"{"cmd":"rm -rf"}"#).unwrap_err();
    assert!(e.starts_with("unknown command `rm -rf`"), "{e}");
    let e = Request::parse(r#"{"cmd":"probe"}"#).unwrap_err();
    assert!(e.starts_with("bad `probe` command"), "{e}");
}

#[test]
fn replies_carry_a_msg_field_and_events_do_not() {
    let w = Reply::Welcome {
        protocol: 1,
        session: Some("s.h5".into()),
        delivered: 7,
    };
    assert_eq!(
        w.to_line(),
        r#"{"msg":"welcome","protocol":1,"session":"s.h5","delivered":7}"#
    );
    assert_eq!(Reply::Ended.to_line(), r#"{"msg":"ended"}"#);
}
