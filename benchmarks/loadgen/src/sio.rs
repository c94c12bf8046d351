//! The Engine.IO v4 / Socket.IO v5 client steps over a websocket, shared by `fanout` and `hold`.
//!
//! A client on the websocket transport only (`/socket.io/?EIO=4&transport=websocket`) receives
//! the open packet `0{...}`, connects to the default namespace (`40` → `40{...}`), and from then
//! on answers Engine.IO pings (`2` → `3`).

use std::cell::RefCell;
use std::io;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use zcasgi_core::frame::OpCode;

use crate::workers::{self, State};
use crate::ws::{self, Event, FrameReader};

/// The path of an Engine.IO websocket-only connection, relative to the server's base URL.
pub const WEBSOCKET_PATH: &str = "socket.io/?EIO=4&transport=websocket";

/// Keeps text messages (Engine.IO packets); a close frame is left to the caller.
pub fn collect(inbox: &mut Vec<Vec<u8>>, event: Event<'_>) {
    if let Event::Message { data, .. } = event {
        inbox.push(data.to_vec());
    }
}

/// Sends one text message (an Engine.IO packet).
///
/// # Errors
/// The write failed.
pub async fn send_text(stream: &mut TcpStream, text: &str) -> io::Result<()> {
    stream.write_all(&ws::masked_frame(OpCode::Text, text.as_bytes())).await
}

/// Answers an Engine.IO ping; a namespace disconnect (`41`) is an error; other packets are
/// ignored.
///
/// # Errors
/// The write failed, or the server disconnected the client from the namespace.
pub async fn handle(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    match message {
        b"2" => send_text(stream, "3").await,
        [b'4', b'1', ..] => {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "disconnected from the namespace"))
        }
        _ => Ok(()),
    }
}

/// Reads until a message starting with `prefix` arrives, answering pings meanwhile.
///
/// # Errors
/// The connection failed or the server disconnected the client.
pub async fn expect(
    stream: &mut TcpStream,
    buf: &RefCell<Vec<u8>>,
    reader: &mut FrameReader,
    inbox: &mut Vec<Vec<u8>>,
    prefix: &str,
) -> io::Result<()> {
    loop {
        while !inbox.is_empty() {
            let message = inbox.remove(0);
            if message.starts_with(prefix.as_bytes()) {
                return Ok(());
            }
            handle(stream, &message).await?;
        }
        workers::read_some(stream, buf, reader, |e| collect(inbox, e)).await?;
    }
}

/// Waits for the open packet and connects to the default namespace.
///
/// `reader` must collect payloads (`FrameReader::new(true)`); `rest` is what the upgrade left.
///
/// # Errors
/// The connection failed or the server refused the namespace.
pub async fn connect(
    stream: &mut TcpStream,
    buf: &RefCell<Vec<u8>>,
    reader: &mut FrameReader,
    inbox: &mut Vec<Vec<u8>>,
    rest: &[u8],
) -> io::Result<()> {
    reader.feed(rest, |e| collect(inbox, e))?;
    expect(stream, buf, reader, inbox, "0").await?;
    send_text(stream, "40").await?;
    expect(stream, buf, reader, inbox, "40").await
}

/// Keeps a connected client alive (answering WebSocket and Engine.IO pings) until the state is
/// `workers::DONE`.
///
/// # Errors
/// The connection failed, or the server closed it or disconnected the client.
pub async fn idle_until_done(
    stream: &mut TcpStream,
    buf: &RefCell<Vec<u8>>,
    reader: &mut FrameReader,
    inbox: &mut Vec<Vec<u8>>,
    rx: &mut watch::Receiver<State>,
) -> io::Result<()> {
    let mut pongs = Vec::new();
    loop {
        for message in std::mem::take(inbox) {
            handle(stream, &message).await?;
        }
        if *rx.borrow_and_update() == workers::DONE {
            return Ok(());
        }
        let mut closed = false;
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            read = workers::read_some(stream, buf, reader, |event| match event {
                Event::Ping(payload) => workers::queue_pong(&mut pongs, payload),
                Event::Close => closed = true,
                message @ Event::Message { .. } => collect(inbox, message),
            }) => {
                read?;
            }
        }
        if closed {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server sent close"));
        }
        workers::flush_pongs(stream, &mut pongs).await?;
    }
}
