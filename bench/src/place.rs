//! Where a benchmark run keeps its files and databases: a fresh folder,
//! and on PostgreSQL fresh databases `emporium_bench_<pid>_<part>`, dropped at the end.

use std::path::PathBuf;

use kernel::config::mask_url;
use sqlx::Connection;

pub struct Place {
    pub dir: PathBuf,
    /// The PostgreSQL server's maintenance database, when the run uses one.
    pub admin: Option<String>,
    parts: &'static [&'static str],
}

impl Place {
    /// `name` names the folder; `parts` are the run's separate databases.
    pub fn new(admin: Option<String>, name: &str, parts: &'static [&'static str]) -> Result<Place, String> {
        if let Some(url) = &admin
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(format!("--database-url must be postgres://… (got {})", mask_url(url)));
        }
        Ok(Place { dir: std::env::temp_dir().join(format!("emporium-{name}-{}", std::process::id())), admin, parts })
    }

    fn database(part: &str) -> String {
        format!("emporium_bench_{}_{part}", std::process::id())
    }

    /// The URL `service` uses in `part`: the part's PostgreSQL database (one
    /// schema per service), or a SQLite file of its own.
    pub fn url(&self, part: &str, service: &str) -> String {
        match &self.admin {
            Some(admin) => with_database(admin, &Self::database(part)),
            None => format!("sqlite://{}", self.dir.join(part).join(format!("{service}.db")).display()),
        }
    }

    pub async fn create(&self) -> Result<(), String> {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let Some(admin) = &self.admin else { return Ok(()) };
        let sql = self.parts.iter().flat_map(|p| {
            let name = Self::database(p);
            [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")]
        });
        admin_sql(admin, &sql.collect::<Vec<_>>()).await
    }

    pub async fn remove(&self) {
        if let Some(admin) = &self.admin {
            let sql: Vec<String> = self.parts.iter().map(|p| format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", Self::database(p))).collect();
            if let Err(e) = admin_sql(admin, &sql).await {
                eprintln!("could not drop the bench databases: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn admin_sql(admin: &str, statements: &[String]) -> Result<(), String> {
    let mut conn = sqlx::PgConnection::connect(admin).await.map_err(|e| format!("{}: {e}", mask_url(admin)))?;
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).execute(&mut conn).await.map_err(|e| format!("{sql}: {e}"))?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// `postgres://u@h:5432/postgres?x=y` with another database name.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let start = base.find("://").map_or(0, |i| i + 3);
    let host = base[start..].find('/').map_or(base, |i| &base[..start + i]);
    query.map_or_else(|| format!("{host}/{name}"), |q| format!("{host}/{name}?{q}"))
}
