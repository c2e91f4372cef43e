//! Product pictures: uploads checked by their content (JPEG, PNG, WebP),
//! decoded within limits, stored with thumbnails in an object store (a
//! local folder, or an S3-compatible bucket), and served at `/media/…`.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use image::{DynamicImage, ImageFormat};
use kernel::config::Config;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use platform::db::Db;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::domain;
use crate::error::CatalogError;
use crate::store::{self, MediaRow};

/// Thumbnail widths made on upload (never wider than the original).
pub const THUMBNAIL_WIDTHS: [u32; 3] = [160, 480, 960];
/// Pictures larger than this on a side are refused.
const MAX_SIDE: u32 = 12_000;
/// Pictures of more pixels than this are refused before decoding: a
/// decoded pixel costs 3-8 bytes, whatever the file weighs.
pub const MAX_PIXELS: u64 = 40_000_000;
/// Pictures decoded at once; more uploads wait their turn.
const CONCURRENT_DECODES: usize = 2;

/// What an upload turned out to be, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    Webp,
}

impl Kind {
    /// Reads the signature; the name and the declared type do not count.
    pub fn sniff(bytes: &[u8]) -> Option<Kind> {
        match bytes {
            [0xFF, 0xD8, 0xFF, ..] => Some(Kind::Jpeg),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(Kind::Png),
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some(Kind::Webp),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
            Kind::Webp => "image/webp",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Kind::Jpeg => "jpg",
            Kind::Png => "png",
            Kind::Webp => "webp",
        }
    }

    fn format(self) -> ImageFormat {
        match self {
            Kind::Jpeg => ImageFormat::Jpeg,
            Kind::Png => ImageFormat::Png,
            Kind::Webp => ImageFormat::WebP,
        }
    }
}

/// A picture ready to store: the original and its thumbnails.
pub struct Processed {
    pub kind: Kind,
    pub width: u32,
    pub height: u32,
    /// (width, file extension, bytes).
    pub thumbnails: Vec<(u32, &'static str, Vec<u8>)>,
}

/// Checks and decodes an upload and makes its thumbnails (CPU work: call it
/// off the async threads).
pub fn process(bytes: &[u8]) -> Result<Processed, CatalogError> {
    let kind = inspect(bytes)?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), kind.format());
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // The largest picture let in, at 8 bytes a pixel (16-bit RGBA).
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| CatalogError::from(domain::invalid("file", "unreadable_image", format!("not a readable picture: {e}"))))?;
    let (width, height) = (image.width(), image.height());
    let mut thumbnails = Vec::new();
    for target in THUMBNAIL_WIDTHS.into_iter().filter(|w| *w < width) {
        let target_height = ((u64::from(height) * u64::from(target)) / u64::from(width)).max(1) as u32;
        let small = image.thumbnail(target, target_height);
        thumbnails.push(encode(&small)?);
        if let Some(last) = thumbnails.last_mut() {
            last.0 = target;
        }
    }
    Ok(Processed { kind, width, height, thumbnails })
}

/// Checks what a picture is and how many pixels it declares, reading only
/// its header: nothing the size of the picture is allocated here.
pub fn inspect(bytes: &[u8]) -> Result<Kind, CatalogError> {
    let kind = Kind::sniff(bytes).ok_or_else(|| {
        CatalogError::from(domain::invalid("file", "unsupported_media_type", "a JPEG, PNG or WebP picture"))
    })?;
    let (width, height) = image::ImageReader::with_format(Cursor::new(bytes), kind.format())
        .into_dimensions()
        .map_err(|e| CatalogError::from(domain::invalid("file", "unreadable_image", format!("not a readable picture: {e}"))))?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS || width > MAX_SIDE || height > MAX_SIDE {
        let reason = format!("{width}×{height} pixels; at most {} megapixels and {MAX_SIDE} pixels a side", MAX_PIXELS / 1_000_000);
        return Err(domain::invalid("file", "image_too_large", reason).into());
    }
    Ok(kind)
}

/// JPEG for opaque pictures, PNG where there is transparency.
fn encode(image: &DynamicImage) -> Result<(u32, &'static str, Vec<u8>), CatalogError> {
    let mut out = Vec::new();
    let failed = |e: image::ImageError| CatalogError::Media(format!("encoding a thumbnail: {e}"));
    if image.color().has_alpha() {
        image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).map_err(failed)?;
        Ok((image.width(), "png", out))
    } else {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82);
        image.to_rgb8().write_with_encoder(encoder).map_err(failed)?;
        Ok((image.width(), "jpg", out))
    }
}

/// A picture as stored: what it is, and the keys of it and its thumbnails.
struct Stored {
    picture: Processed,
    original: String,
    thumbnails: Vec<(u32, String)>,
}

/// Where pictures are kept.
#[derive(Clone)]
pub struct MediaStore {
    store: Arc<dyn ObjectStore>,
    pub max_upload_bytes: usize,
    /// Bounds the pictures decoded at once (each may take hundreds of MB).
    decodes: Arc<tokio::sync::Semaphore>,
}

/// The S3 (or S3-compatible) bucket `media.s3_*` names, as the catalog
/// and `emporium doctor` reach it.
pub fn s3_bucket(m: &kernel::config::MediaConfig) -> Result<object_store::aws::AmazonS3, object_store::Error> {
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(m.s3_bucket.clone().unwrap_or_default())
        .with_region(m.s3_region.clone())
        .with_allow_http(m.s3_allow_http);
    if let Some(endpoint) = &m.s3_endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let (Some(id), Some(secret)) = (&m.s3_access_key_id, &m.s3_secret_access_key) {
        builder = builder.with_access_key_id(id.clone()).with_secret_access_key(secret.clone());
    }
    builder.build()
}

impl MediaStore {
    pub fn from_config(config: &Config) -> Result<MediaStore, CatalogError> {
        let m = &config.media;
        let store: Arc<dyn ObjectStore> = match m.store.as_str() {
            "s3" => Arc::new(s3_bucket(m).map_err(|e| CatalogError::Media(e.to_string()))?),
            _ => {
                let dir = m.dir.clone().unwrap_or_else(|| config.data_dir.join("media"));
                std::fs::create_dir_all(&dir).map_err(|e| CatalogError::Media(format!("{}: {e}", dir.display())))?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| CatalogError::Media(e.to_string()))?,
                )
            }
        };
        Ok(MediaStore { store, max_upload_bytes: m.max_upload_bytes, decodes: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DECODES)) })
    }

    /// Checks a picture, makes its thumbnails, and stores all of them under
    /// `prefix`: `original.<ext>` and `w<width>.<ext>`.
    async fn keep(&self, prefix: &str, bytes: Bytes) -> Result<Stored, CatalogError> {
        // A picture too large is refused before it waits for a decode slot.
        inspect(&bytes)?;
        let mut picture = self.decode(bytes.clone(), process).await?;
        let original = format!("{prefix}/original.{}", picture.kind.extension());
        self.put(&original, bytes.to_vec()).await?;
        let mut thumbnails = Vec::new();
        for (width, ext, data) in std::mem::take(&mut picture.thumbnails) {
            let key = format!("{prefix}/w{width}.{ext}");
            self.put(&key, data).await?;
            thumbnails.push((width, key));
        }
        Ok(Stored { picture, original, thumbnails })
    }

    /// Runs `work` (a decode) off the async threads once a decode slot is
    /// free. The slot goes with the work, not with the request: a request
    /// given up on leaves its decode running, and that decode still counts.
    async fn decode<T: Send + 'static>(
        &self,
        bytes: Bytes,
        work: impl FnOnce(&[u8]) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, CatalogError> {
        let permit = self.decodes.clone().acquire_owned().await.map_err(|e| CatalogError::Media(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let done = work(&bytes);
            drop(permit);
            done
        })
        .await
        .map_err(|e| CatalogError::Media(e.to_string()))?
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), CatalogError> {
        let path = ObjectPath::parse(key).map_err(|e| CatalogError::Media(e.to_string()))?;
        self.store.put(&path, PutPayload::from(bytes)).await.map_err(|e| CatalogError::Media(e.to_string()))?;
        Ok(())
    }

    /// An object's bytes, or `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, CatalogError> {
        let Ok(path) = ObjectPath::parse(key) else { return Ok(None) };
        match self.store.get(&path).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(|e| CatalogError::Media(e.to_string()))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(CatalogError::Media(e.to_string())),
        }
    }

    async fn delete(&self, key: &str) {
        if let Ok(path) = ObjectPath::parse(key)
            && let Err(e) = self.store.delete(&path).await
        {
            tracing::warn!(key, error = %e, "could not delete a media object");
        }
    }
}

/// A key is ours when it is made of the characters we generate.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 300
        && !key.contains("..")
        && !key.starts_with('/')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
}

pub fn content_type_of(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("jpg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    }
}

fn clean_alt(alt: &str) -> Result<String, CatalogError> {
    let alt = alt.trim();
    if alt.chars().count() > 300 || alt.chars().any(char::is_control) {
        return Err(domain::invalid("alt", "invalid_alt", "at most 300 characters").into());
    }
    Ok(alt.to_owned())
}

/// Stores an uploaded picture of a product with its thumbnails, last in
/// the product's order.
pub async fn upload(db: &Db, media: &MediaStore, product: &str, bytes: Bytes, alt: &str) -> Result<MediaRow, CatalogError> {
    let alt = clean_alt(alt)?;
    let row = store::product(db, product).await?.ok_or(CatalogError::ProductNotFound)?;
    if bytes.len() > media.max_upload_bytes {
        return Err(CatalogError::TooLarge(media.max_upload_bytes));
    }
    let id = kernel::id::MediaId::new().to_string();
    let stored = media.keep(&format!("products/{}/{id}", row.id), bytes.clone()).await?;
    let (original, thumbs) = (stored.original, stored.thumbnails);
    let processed = stored.picture;
    let new = MediaRow {
        id,
        product_id: row.id.clone(),
        object_key: Some(original),
        source_url: None,
        content_type: Some(processed.kind.content_type().to_owned()),
        alt,
        position: 0,
        width: Some(processed.width as i32),
        height: Some(processed.height as i32),
        byte_size: Some(bytes.len() as i64),
        thumbnails: thumbs,
        created_at: OffsetDateTime::now_utc(),
    };
    let mut tx = db.begin().await?;
    let saved = store::insert_media(&mut tx, &new).await?;
    changed(&mut tx, &row.id).await?;
    tx.commit().await?;
    Ok(saved)
}

/// The product's pictures changed: its time moves on and subscribers hear.
async fn changed(tx: &mut platform::db::Tx, product: &str) -> Result<(), CatalogError> {
    store::touch_product(tx, product).await?;
    let event = kernel::Envelope::new("product.updated", product, serde_json::json!({"product_id": product}));
    platform::outbox::enqueue(tx, &event).await?;
    Ok(())
}

/// Records the address of a picture kept elsewhere (an import whose images
/// are not downloaded), once per product and address; true if it was new.
/// An address of one of the product's own stored pictures (an export of
/// this shop) is already there.
pub async fn record_url(tx: &mut platform::db::Tx, product: &str, url: &str, alt: &str) -> Result<bool, CatalogError> {
    let url = url.trim();
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2000 || url.chars().any(char::is_whitespace) {
        return Err(domain::invalid("image_src", "invalid_url", "an http(s) address").into());
    }
    let own_key = url.split_once("/media/").map(|(_, key)| key);
    if store::media_known(tx, product, url, own_key).await? {
        return Ok(false);
    }
    let new = MediaRow {
        id: kernel::id::MediaId::new().to_string(),
        product_id: product.to_owned(),
        object_key: None,
        source_url: Some(url.to_owned()),
        content_type: None,
        alt: clean_alt(alt)?,
        position: 0,
        width: None,
        height: None,
        byte_size: None,
        thumbnails: Vec::new(),
        created_at: OffsetDateTime::now_utc(),
    };
    store::insert_media(tx, &new).await?;
    Ok(true)
}

/// Changes a picture's alt text or its place in the product's order.
pub async fn update(db: &Db, product: &str, id: &str, alt: Option<&str>, position: Option<i32>) -> Result<(), CatalogError> {
    let alt = alt.map(clean_alt).transpose()?;
    let row = store::product(db, product).await?.ok_or(CatalogError::ProductNotFound)?;
    let mut tx = db.begin().await?;
    let mut all = store::media_of(&mut tx, &row.id).await?;
    let Some(from) = all.iter().position(|m| m.id == id) else {
        return Err(CatalogError::MediaNotFound);
    };
    if let Some(alt) = &alt {
        store::set_media_alt(&mut tx, id, alt).await?;
    }
    if let Some(to) = position {
        let item = all.remove(from);
        let to = usize::try_from(to).unwrap_or(0).min(all.len());
        all.insert(to, item);
        for (i, m) in all.iter().enumerate() {
            store::set_media_position(&mut tx, &m.id, i as i32).await?;
        }
    }
    changed(&mut tx, &row.id).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a picture and its stored files.
pub async fn delete(db: &Db, media: &MediaStore, product: &str, id: &str) -> Result<(), CatalogError> {
    let row = store::product(db, product).await?.ok_or(CatalogError::ProductNotFound)?;
    let mut tx = db.begin().await?;
    let found = store::media_of(&mut tx, &row.id).await?.into_iter().find(|m| m.id == id).ok_or(CatalogError::MediaNotFound)?;
    store::delete_media(&mut tx, id).await?;
    changed(&mut tx, &row.id).await?;
    tx.commit().await?;
    for key in found.object_key.iter().chain(found.thumbnails.iter().map(|(_, k)| k)) {
        // Demo placeholders are shared between products.
        if !key.starts_with("demo/") {
            media.delete(key).await;
        }
    }
    Ok(())
}

#[derive(Serialize, serde::Deserialize, ToSchema)]
pub struct ThumbnailView {
    pub width: u32,
    pub url: String,
}

#[derive(Serialize, serde::Deserialize, ToSchema)]
pub struct MediaView {
    pub id: String,
    /// `/media/…` for stored pictures, or the recorded address.
    pub url: String,
    pub alt: String,
    pub position: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<i32>,
    /// Smaller copies, narrowest first.
    pub thumbnails: Vec<ThumbnailView>,
}

impl From<MediaRow> for MediaView {
    fn from(m: MediaRow) -> Self {
        let url = match (&m.object_key, &m.source_url) {
            (Some(key), _) => format!("/media/{key}"),
            (None, Some(url)) => url.clone(),
            (None, None) => String::new(),
        };
        MediaView {
            id: m.id,
            url,
            alt: m.alt,
            position: m.position,
            content_type: m.content_type,
            width: m.width,
            height: m.height,
            thumbnails: m.thumbnails.into_iter().map(|(width, key)| ThumbnailView { width, url: format!("/media/{key}") }).collect(),
        }
    }
}

/// A placeholder picture for the demo: a soft diagonal gradient in a hue
/// of its own, made here (no network), as PNG.
pub fn placeholder(hue: u32, size: u32) -> Result<Vec<u8>, CatalogError> {
    let (r, g, b) = hue_to_rgb(hue % 360);
    let image = image::RgbImage::from_fn(size, size, |x, y| {
        let t = (x + y) as f32 / (2 * size) as f32;
        let mix = |c: u8| (f32::from(c) * (1.0 - t * 0.55) + 255.0 * t * 0.55) as u8;
        image::Rgb([mix(r), mix(g), mix(b)])
    });
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .map_err(|e| CatalogError::Media(e.to_string()))?;
    Ok(out)
}

fn hue_to_rgb(hue: u32) -> (u8, u8, u8) {
    let x = ((60 - (hue % 120).abs_diff(60)) * 200 / 60) as u8;
    match hue / 60 {
        0 => (200, x, 60),
        1 => (x, 200, 60),
        2 => (60, 200, x),
        3 => (60, x, 200),
        4 => (x, 60, 200),
        _ => (200, 60, x),
    }
}

/// Stores a demo placeholder with its thumbnails under `demo/`, once, and
/// returns (original key, width, thumbnails) for media rows to point at.
pub async fn store_placeholder(media: &MediaStore, name: &str, hue: u32) -> Result<(String, u32, Vec<(u32, String)>), CatalogError> {
    let png = tokio::task::spawn_blocking(move || placeholder(hue, 600)).await.map_err(|e| CatalogError::Media(e.to_string()))??;
    let stored = media.keep(&format!("demo/{name}"), Bytes::from(png)).await?;
    Ok((stored.original, stored.picture.width, stored.thumbnails))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_known_by_their_content() {
        let png = placeholder(200, 64).unwrap();
        assert_eq!(Kind::sniff(&png), Some(Kind::Png));
        assert_eq!(Kind::sniff(b"GIF89a...."), None);
        assert_eq!(Kind::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Kind::Webp));
        assert_eq!(Kind::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Kind::Jpeg));
        // A text file named .png is still a text file.
        assert!(process(b"<html>not a picture</html>").is_err());
        // A PNG signature on garbage does not decode.
        let mut fake = png[..8].to_vec();
        fake.extend_from_slice(&[0; 64]);
        assert!(matches!(process(&fake), Err(CatalogError::Invalid(e)) if e.code == "unreadable_image"));
    }

    #[test]
    fn thumbnails_are_made_narrower_only() {
        let png = placeholder(10, 600).unwrap();
        let p = process(&png).unwrap();
        assert_eq!((p.kind, p.width, p.height), (Kind::Png, 600, 600));
        let widths: Vec<u32> = p.thumbnails.iter().map(|t| t.0).collect();
        assert_eq!(widths, vec![160, 480]);
        for (w, ext, bytes) in &p.thumbnails {
            assert_eq!(*ext, "jpg");
            let decoded = image::load_from_memory(bytes).unwrap();
            assert_eq!(decoded.width(), *w);
        }
    }

    #[tokio::test]
    async fn a_decode_keeps_its_slot_until_it_ends_even_when_its_request_is_given_up() {
        let media = MediaStore {
            store: Arc::new(object_store::memory::InMemory::new()),
            max_upload_bytes: 1024,
            decodes: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DECODES)),
        };
        let (started, on_start) = tokio::sync::oneshot::channel();
        let (release, on_release) = std::sync::mpsc::channel::<()>();
        let (finished, on_finish) = tokio::sync::oneshot::channel();
        let request = tokio::spawn({
            let media = media.clone();
            async move {
                media.decode(Bytes::from_static(b"picture"), move |_| {
                    let _ = started.send(());
                    let _ = on_release.recv();
                    let _ = finished.send(());
                    Ok(())
                }).await
            }
        });
        on_start.await.unwrap();
        // The shopper's connection drops: the request's future is dropped mid-decode.
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert_eq!(media.decodes.available_permits(), CONCURRENT_DECODES - 1, "the running decode still holds its slot");
        release.send(()).unwrap();
        on_finish.await.unwrap();
        let all = media.decodes.acquire_many(CONCURRENT_DECODES as u32).await.unwrap();
        drop(all);
    }

    #[test]
    fn keys_stay_inside_the_store() {
        assert!(valid_key("products/prod_1/med_2/w160.jpg"));
        assert!(!valid_key("../etc/passwd"));
        assert!(!valid_key("/abs"));
        assert!(!valid_key("a b"));
    }
}
