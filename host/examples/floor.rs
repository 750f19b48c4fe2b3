//! The performance floor for manifest `GET`: a trivial axum server that
//! answers every request with the same manifest bytes from memory, no
//! routing, storage or auth. `bench/manifest-get.sh` measures Gantry against
//! it; Gantry should reach at least 0.7x of it.
//!
//! Usage: `floor ADDR MANIFEST_FILE MEDIA_TYPE`.

use axum::Router;
use axum::http::header;
use axum::routing::get;
use bytes::Bytes;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, file, media_type] = args.as_slice() else {
        eprintln!("usage: floor ADDR MANIFEST_FILE MEDIA_TYPE");
        std::process::exit(2);
    };
    let body = Bytes::from(std::fs::read(file)?);
    let media_type = media_type.clone();
    let app = Router::new().fallback(get(move || {
        let body = body.clone();
        let media_type = media_type.clone();
        async move { ([(header::CONTENT_TYPE, media_type)], body) }
    }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
