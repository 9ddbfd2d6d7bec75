//! The contract every built-in picker keeps, checked on random inputs, and custom pickers.

use std::sync::Arc;

use super::*;
use crate::status::Code;

fn builtins(seed: u64) -> Vec<Box<dyn Pick>> {
    vec![
        Box::new(P2c::with_seed(seed)),
        Box::new(LeastActive::with_seed(seed)),
        Box::new(Random::with_seed(seed)),
        Box::new(RoundRobin::new()),
        Box::new(WeightedRoundRobin::new()),
        Box::new(ConsistentHash::with_replicas(8)),
    ]
}

#[test]
fn every_builtin_keeps_the_contract_on_random_inputs() {
    let mut rng = fastrand::Rng::with_seed(0x0062_616c_616e_6365);
    let names: Vec<String> = (0..12).map(|i| format!("10.0.0.{i}:7070")).collect();
    for round in 0..300 {
        let pickers = builtins(round);
        for _ in 0..20 {
            let endpoints = random_endpoints(&names, &mut rng);
            let len = endpoints.len();
            let exclude: Vec<Arc<str>> =
                names.iter().filter(|_| rng.u8(0..3) == 0).map(|a| a.as_str().into()).collect();
            let pin = rng.bool().then(|| names[rng.usize(0..names.len())].as_str());
            let payload: Vec<u8> = (0..rng.usize(0..16)).map(|_| rng.u8(..)).collect();
            let mut ctx = PickContext::new().with_exclude(&exclude).with_call("Svc.m", &payload);
            if let Some(pin) = pin {
                ctx = ctx.with_pin(pin);
            }
            if rng.bool() {
                ctx = ctx.with_hash_key(rng.u64(..));
            }

            let eligible: Vec<usize> = (0..len).filter(|&i| endpoints[i].is_eligible()).collect();
            let fresh: Vec<usize> =
                eligible.iter().copied().filter(|&i| !ctx.is_excluded(endpoints[i].address)).collect();
            let pinned = pin.and_then(|p| eligible.iter().copied().find(|&i| endpoints[i].address == p));
            for picker in &pickers {
                picker.update(&endpoints);
                let result = picker.pick(&endpoints, &ctx);
                let Ok(i) = result else {
                    let status = result.expect_err("checked above");
                    assert_eq!(status.code(), Code::Unavailable, "{picker:?}");
                    assert!(eligible.is_empty(), "{picker:?} failed with {eligible:?} eligible: {status}");
                    continue;
                };
                assert!(i < len, "{picker:?} returned {i} of {len}");
                assert!(endpoints[i].is_eligible(), "{picker:?} chose ineligible {:?}", endpoints[i]);
                match pinned {
                    Some(p) => assert_eq!(i, p, "{picker:?} ignored the pin"),
                    None if !fresh.is_empty() => assert!(fresh.contains(&i), "{picker:?} chose excluded {i}"),
                    None => {}
                }
            }
        }
    }
}

/// Endpoints named by a random prefix of `names`, with random weights (0 and `u32::MAX`
/// included), calls in flight, latencies and availability: the contract tests' inputs.
fn random_endpoints<'a>(names: &'a [String], rng: &mut fastrand::Rng) -> Vec<EndpointView<'a>> {
    let len = rng.usize(0..=names.len());
    names[..len]
        .iter()
        .map(|a| {
            EndpointView::new(a)
                .with_weight(*rng.choice(&[0, 1, 1, 2, 5, 100, u32::MAX]).unwrap_or(&1))
                .with_in_flight(rng.u64(0..4))
                .with_latency_ewma_ns(*rng.choice(&[0, 1, 1_000_000, u64::MAX]).unwrap_or(&0))
                .with_available(rng.u8(0..4) != 0)
        })
        .collect()
}

#[test]
fn every_draw_keeps_the_contract_and_agrees_with_the_whole_set_s_pick() {
    let names: Vec<String> = (0..40).map(|i| format!("10.0.0.{i}:7070")).collect();
    let mut rng = fastrand::Rng::with_seed(0x6472_6177);
    let mut drew = std::collections::BTreeSet::new();
    for round in 0..300 {
        let pickers = builtins(round);
        let endpoints = random_endpoints(&names, &mut rng);
        let exclude: Vec<Arc<str>> = names.iter().filter(|_| rng.u8(0..4) == 0).map(|a| a.as_str().into()).collect();
        let ctx = PickContext::new().with_exclude(&exclude).with_hash_key(rng.u64(..));
        let ready = ReadySet::new(&endpoints);
        for picker in &pickers {
            picker.update(&endpoints);
            let mut drawn = Drawn::new();
            if !picker.draw(&ready, &ctx, &mut drawn) {
                continue;
            }
            for &position in drawn.positions() {
                assert!(position < ready.len(), "{picker:?} drew {position} of {}", ready.len());
                let endpoint = &endpoints[ready.index(position)];
                assert!(endpoint.is_eligible(), "{picker:?} drew ineligible {endpoint:?}");
                assert!(!ctx.is_excluded(endpoint.address), "{picker:?} drew excluded {endpoint:?}");
            }
            // Draws are exact: nothing only when nothing is drawable.
            let fresh = (0..ready.len()).filter(|&p| !ctx.is_excluded(ready.address(p))).count();
            assert_eq!(drawn.is_empty(), fresh == 0, "{picker:?} drew {drawn:?} of {fresh} drawable");
            drew.insert(format!("{picker:?}").chars().take_while(|c| c.is_alphanumeric()).collect::<String>());
            // A consistent-hash draw finds the owner the whole set's pick finds.
            if format!("{picker:?}").starts_with("ConsistentHash") && !drawn.is_empty() {
                let whole = picker.pick(&endpoints, &ctx).expect("an endpoint was drawable");
                assert_eq!(ready.index(drawn.positions()[0]), whole, "round {round}");
            }
        }
    }
    let drawing = ["ConsistentHash", "LeastActive", "P2c", "Random", "RoundRobin", "WeightedRoundRobin"];
    assert_eq!(drew.into_iter().collect::<Vec<_>>(), drawing, "every built-in draws");
}

#[test]
fn no_eligible_endpoint_is_unavailable_with_the_reason() {
    let down = |a| EndpointView::new(a).with_available(false);
    let drained = |a| EndpointView::new(a).with_weight(0);
    let cases: [(Vec<EndpointView<'_>>, &str); 6] = [
        (vec![], "no endpoints to pick from"),
        (vec![down("a:1")], "the only endpoint, a:1, is unavailable"),
        (vec![drained("a:1")], "the only endpoint, a:1, has weight 0"),
        (vec![down("a"), down("b"), down("c")], "all 3 endpoints are unavailable"),
        (vec![drained("a"), drained("b")], "every endpoint has weight 0"),
        (
            vec![down("a"), drained("b"), drained("c")],
            "no endpoint can take calls: 1 of 3 are unavailable and the other 2 have weight 0",
        ),
    ];
    for (endpoints, message) in &cases {
        for picker in builtins(1) {
            let status = picker.pick(endpoints, &PickContext::new().with_pin("a")).expect_err("nothing to pick");
            assert_eq!(status.code(), Code::Unavailable);
            assert_eq!(status.message(), *message, "{picker:?}");
        }
    }
}

#[test]
fn candidates_skip_excluded_then_revisit_them() {
    let endpoints = [EndpointView::new("a"), EndpointView::new("b").with_available(false), EndpointView::new("c")];
    let exclude: [Arc<str>; 1] = ["a".into()];
    let ctx = PickContext::new().with_exclude(&exclude);
    let candidates = Candidates::new(&endpoints, &ctx).expect("c is eligible");
    assert_eq!(candidates.iter().collect::<Vec<_>>(), [2]);
    assert_eq!((candidates.count(), candidates.first(), candidates.is_revisiting()), (1, 2, false));
    assert_eq!(candidates.nth(5), 2);

    let everything: [Arc<str>; 3] = ["a".into(), "b".into(), "c".into()];
    let ctx = PickContext::new().with_exclude(&everything).with_pin("b");
    let candidates = Candidates::new(&endpoints, &ctx).expect("a and c are eligible");
    assert_eq!(candidates.iter().collect::<Vec<_>>(), [0, 2]);
    assert!(candidates.is_revisiting());
    assert_eq!(candidates.pinned(), None, "b is down, so the pin does not hold");
    assert!(!candidates.contains(1) && !candidates.contains(3));
}

#[test]
fn the_context_takes_hints_and_the_call_from_a_request() {
    let mut request = Request::new("Cache.get", bytes::Bytes::from_static(b"user:1"));
    let hints = request.ctx_mut().hints_mut();
    hints.exclude.push("a".into());
    hints.pin = Some("b".into());
    let ctx = PickContext::for_request(&request);
    assert_eq!((ctx.method(), ctx.payload()), ("Cache.get", &b"user:1"[..]));
    assert_eq!((ctx.pin(), ctx.hash_key()), (Some("b"), None));
    assert!(ctx.is_excluded("a") && !ctx.is_excluded("b"));
    assert_eq!(ctx.key(), PickContext::new().with_call("Cache.get", b"user:1").key());
}

/// Always the candidate with the longest address: a custom picker built on [`Candidates`].
#[derive(Debug)]
struct Longest;

impl Pick for Longest {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        let candidates = Candidates::new(endpoints, ctx)?;
        if let Some(pinned) = candidates.pinned() {
            return Ok(pinned);
        }
        Ok(candidates.iter().max_by_key(|&i| endpoints[i].address.len()).unwrap_or(candidates.first()))
    }
}

#[test]
fn a_custom_picker_works_behind_box_and_arc() {
    let endpoints = [
        EndpointView::new("a"),
        EndpointView::new("ccc"),
        EndpointView::new("bb"),
        EndpointView::new("dddd").with_available(false),
    ];
    let boxed: Box<dyn Pick> = Box::new(Longest);
    assert_eq!(boxed.pick(&endpoints, &PickContext::new()), Ok(1));
    let exclude: [Arc<str>; 1] = ["ccc".into()];
    let shared: Arc<dyn Pick> = Arc::new(Longest);
    assert_eq!(shared.pick(&endpoints, &PickContext::new().with_exclude(&exclude)), Ok(2));
    assert_eq!(shared.pick(&endpoints, &PickContext::new().with_pin("a")), Ok(0));
    // A generic holder accepts the box as well as the bare picker.
    fn first_pick(picker: impl Pick, endpoints: &[EndpointView<'_>]) -> Result<usize, Status> {
        picker.pick(endpoints, &PickContext::new())
    }
    assert_eq!(first_pick(boxed, &endpoints), Ok(1));
    assert_eq!(first_pick(Longest, &[]).map_err(|s| s.code()), Err(Code::Unavailable));
}

#[test]
fn rotations_stay_exact_across_threads() {
    let endpoints =
        [EndpointView::new("A").with_weight(3), EndpointView::new("B").with_weight(2), EndpointView::new("C")];
    let ready = ReadySet::new(&endpoints);
    let round_robin = RoundRobin::new();
    let weighted = WeightedRoundRobin::new();
    let (plain, smooth, drawn) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let (mut plain, mut smooth, mut drawn) = ([0usize; 3], [0usize; 3], [0usize; 3]);
                    for _ in 0..600 {
                        plain[round_robin.pick(&endpoints, &PickContext::new()).unwrap_or(3) % 3] += 1;
                        smooth[weighted.pick(&endpoints, &PickContext::new()).unwrap_or(3) % 3] += 1;
                        let mut draw = Drawn::new();
                        weighted.draw(&ready, &PickContext::new(), &mut draw);
                        drawn[draw.positions().first().map_or(3, |&p| ready.index(p)) % 3] += 1;
                    }
                    (plain, smooth, drawn)
                })
            })
            .collect();
        let (mut plain, mut smooth, mut drawn) = ([0usize; 3], [0usize; 3], [0usize; 3]);
        for worker in workers {
            let (p, s, d) = worker.join().expect("no picker panics");
            (0..3).for_each(|i| (plain[i], smooth[i], drawn[i]) = (plain[i] + p[i], smooth[i] + s[i], drawn[i] + d[i]));
        }
        (plain, smooth, drawn)
    });
    // 2,400 picks each: 800 rotations of three, 400 smooth cycles of six.
    assert_eq!(plain, [800, 800, 800]);
    assert_eq!(smooth, [1_200, 800, 400]);
    assert_eq!(drawn, [1_200, 800, 400]);
}
