//! `medallion serve`: Prometheus metrics over HTTP (`GET /metrics`).

use anyhow::{Context, Result};
use medallion::observability::metrics::gather;
use medallion::project::Project;
use medallion::storage::Lake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::open;
use crate::Outcome;
use crate::args::Global;

pub async fn serve(g: &Global, addr: &str) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("serving metrics at http://{}/metrics", listener.local_addr()?);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, _) = accepted.context("accepting a connection")?;
                let (project, lake) = (project.clone(), lake.clone());
                tokio::spawn(async move { respond(socket, &project, &lake).await });
            }
            _ = term.recv() => return Ok(Outcome::Ok),
            _ = tokio::signal::ctrl_c() => return Ok(Outcome::Ok),
        }
    }
}

/// Serves metrics in the background (for `schedule --metrics`).
pub async fn spawn(addr: &str, project: Project, lake: Lake) -> Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("serving metrics at http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (project, lake) = (project.clone(), lake.clone());
            tokio::spawn(async move { respond(socket, &project, &lake).await });
        }
    });
    Ok(())
}

async fn respond(mut socket: tokio::net::TcpStream, project: &Project, lake: &Lake) {
    let mut buf = [0u8; 4096];
    let n = socket.read(&mut buf).await.unwrap_or(0);
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" {
        match gather(lake, project, chrono::Utc::now()).await {
            Ok(text) => ("200 OK", text),
            Err(e) => ("500 Internal Server Error", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}
