//! Small helpers around tokio-tungstenite, the standard client.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A tokio-tungstenite client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects with tokio-tungstenite.
///
/// # Panics
///
/// If the handshake fails.
pub async fn ws_connect(url: &str) -> Ws {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _resp)) => ws,
        Err(e) => panic!("tokio-tungstenite could not connect to {url}: {e}"),
    }
}

/// The next message that is not a ping or pong (tokio-tungstenite answers
/// pings itself while it is read), `None` once the stream has ended.
///
/// # Panics
///
/// On a timeout or a protocol/I/O error.
pub async fn next_message(ws: &mut Ws, timeout: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message from the server within {timeout:?}"));
        match next {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => return Some(m),
            Some(Err(e)) => panic!("websocket error: {e}"),
            None => return None,
        }
    }
}

/// Reads until the server's close frame arrives and returns its code
/// (skipping any other message); then keeps reading until the stream ends,
/// so tokio-tungstenite sends its reply and sees the TCP close.
///
/// # Panics
///
/// If the stream ends or fails before a close frame, or on a timeout.
pub async fn expect_close(ws: &mut Ws, timeout: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + timeout;
    let code = loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no close frame from the server within {timeout:?}"));
        match next {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket error before the close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    };
    // Drain: the close reply goes out and the server's TCP close is seen.
    // Errors here (a reset after the handshake) do not change the outcome.
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, ws.next()).await {}
    code
}
