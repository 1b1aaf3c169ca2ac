//! The echo upstream used by the integration tests, as a standalone server for the load
//! script: `cargo run --release --example echo_upstream -- 127.0.0.1:8081`.

#[path = "../tests/common/echo.rs"]
mod echo;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let e = echo::Echo::start_on(&addr)?;
    println!("echo upstream on {}", e.addr);
    loop {
        std::thread::park();
    }
}
