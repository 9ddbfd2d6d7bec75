//! A service with several methods and what can go wrong when calling it: an application error
//! that reaches the client typed, a deadline that expires while the server works, and a call to
//! a method the server does not have, which it refuses with `NotFound` instead of ignoring.
//!
//! The unknown method comes from a newer version of the client (`CalculatorV2`) talking to an
//! older server: methods are addressed by name on the wire, so the old ones keep working and
//! only the new one is refused.
//!
//! Run it with `cargo run --example calculator`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zrpc::{Channel, Code, Context, Server};

/// Why a calculation has no answer. Travels to the client as part of the method's result.
#[derive(Debug, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivisionByZero,
    /// The result does not fit in an `i64`.
    Overflow,
}

/// Integer arithmetic.
#[zrpc::service]
pub trait Calculator {
    /// `a + b`, or `Overflow`.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// `a / b`, or `DivisionByZero`.
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Adds all the numbers after thinking about it for `think_ms` milliseconds.
    async fn slow_sum(&self, numbers: Vec<i64>, think_ms: u64) -> i64;
}

/// The same service as a newer client knows it: one more method.
#[zrpc::service(name = "Calculator")]
pub trait CalculatorV2 {
    /// `a + b`, or `Overflow`.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// The integer square root; the server in this example is too old to have it.
    async fn isqrt(&self, n: u64) -> u64;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }

    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            return Err(MathError::DivisionByZero);
        }
        a.checked_div(b).ok_or(MathError::Overflow)
    }

    async fn slow_sum(&self, numbers: Vec<i64>, think_ms: u64) -> i64 {
        tokio::time::sleep(Duration::from_millis(think_ms)).await;
        numbers.iter().sum()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .name("calculator-1")
        .add_service(CalculatorServer::new(Calc))
        .bind("tcp://127.0.0.1:0")
        .await?;
    let address = server.local_addr().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));

    let channel = Channel::builder(address).name("calculator-example").connect().await?;
    let calc = CalculatorClient::new(channel.clone());

    // The outer `?` is for the framework's errors; the inner `Result` is the method's own.
    println!("2 + 40         = {:?}", calc.add(2, 40).await?);
    println!("i64::MAX + 1   = {:?}", calc.add(i64::MAX, 1).await?);
    println!("7 / 0          = {:?}", calc.divide(7, 0).await?);
    println!("sum of 1..=100 = {}", calc.slow_sum((1..=100).collect(), 10).await?);

    // The server needs a second; the caller gives it 100 ms. The server gives up too.
    let hurried = calc.with_context(Context::new().with_timeout(Duration::from_millis(100)));
    match hurried.slow_sum(vec![1, 2, 3], 1_000).await {
        Err(status) if status.code() == Code::DeadlineExceeded => println!("slow_sum       : {status}"),
        other => return Err(format!("expected the deadline to expire, got {other:?}").into()),
    }

    // A newer client: `add` still works, `isqrt` is refused by name.
    let newer = CalculatorV2Client::new(channel);
    println!("v2: 1 + 1      = {:?}", newer.add(1, 1).await?);
    match newer.isqrt(81).await {
        Err(status) if status.code() == Code::NotFound => println!("v2: isqrt      : {status}"),
        other => return Err(format!("expected NotFound, got {other:?}").into()),
    }

    let _ = stop.send(());
    serving.await??;
    Ok(())
}
