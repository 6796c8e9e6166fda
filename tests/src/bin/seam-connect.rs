//! `seam-connect ADDR`: opens a TCP connection to ADDR, prints the first line the server
//! sends, and exits (1 on any failure, with the reason on stderr). Transparent-mode system
//! tests run it inside a pod as another user (`setpriv`), to make a connection the way a
//! process of the proxy's uid would; a test process cannot change its own uid per socket.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// How long the connection and the server's line may each take.
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(addr), None) = (args.next(), args.next()) else {
        eprintln!("usage: seam-connect ADDR (e.g. 10.77.0.3:9000 or [fd77::3]:9000)");
        return ExitCode::FAILURE;
    };
    match first_line(&addr) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("seam-connect {addr}: {err}");
            ExitCode::FAILURE
        }
    }
}

fn first_line(addr: &str) -> Result<String, Box<dyn std::error::Error>> {
    let addr: SocketAddr = addr.parse()?;
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}
