//! A real HTTP/1.1 upstream that answers every request with a JSON echo of what it
//! received: method, target, every header (in order, duplicates kept) and the body.
//! Shared by the integration tests and the load script's upstream (examples/echo_upstream).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A running echo server.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests answered so far.
    pub hits: Arc<AtomicUsize>,
}

impl Echo {
    /// Starts on a free loopback port, one thread per connection.
    pub fn start() -> std::io::Result<Echo> {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts on the given address.
    pub fn start_on(addr: &str) -> std::io::Result<Echo> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &counter);
                });
            }
        });
        Ok(Echo { addr, hits })
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, hits: &AtomicUsize) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            if head.len() > 1 << 20 {
                return Ok(());
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            return Ok(());
        }
        let method = req.method.unwrap_or("").to_string();
        let target = req.path.unwrap_or("").to_string();
        let mut list = Vec::new();
        let mut content_length = 0usize;
        let mut chunked = false;
        let mut close = false;
        for h in req.headers.iter() {
            let value = String::from_utf8_lossy(h.value).to_string();
            if h.name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
            if h.name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
            if h.name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                close = true;
            }
            list.push(serde_json::json!([h.name, value]));
        }
        let body = if chunked {
            read_chunked(&mut reader)?
        } else {
            let mut b = vec![0; content_length];
            reader.read_exact(&mut b)?;
            b
        };
        hits.fetch_add(1, Ordering::SeqCst);
        // `delay_ms=N` in the query: answer late (in-flight requests during a shutdown).
        if let Some(ms) = target
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|p| p.strip_prefix("delay_ms=")))
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms.min(30_000)));
        }
        let echo = serde_json::json!({
            "method": method,
            "target": target,
            "headers": list,
            "body": String::from_utf8_lossy(&body),
        });
        let out = echo.to_string();
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-echo: 1\r\ncontent-length: {}\r\n\r\n{}",
            out.len(),
            out
        )?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size =
            usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            let mut end = String::new();
            reader.read_line(&mut end)?;
            return Ok(body);
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        chunk.truncate(size);
        body.extend_from_slice(&chunk);
    }
}
