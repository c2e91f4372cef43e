//! The category tree: creating, moving and removing categories.

use kernel::id::CategoryId;
use platform::db::Db;

use crate::domain;
use crate::error::CatalogError;
use crate::store::{self, CategoryRow};

/// A category with its children, as the storefront shows the tree.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Node {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub position: i32,
    #[schema(no_recursion)]
    pub children: Vec<Node>,
}

/// Builds the tree from flat rows (already in display order).
pub fn tree(rows: &[CategoryRow]) -> Vec<Node> {
    fn children(rows: &[CategoryRow], parent: Option<&str>) -> Vec<Node> {
        rows.iter()
            .filter(|r| r.parent_id.as_deref() == parent)
            .map(|r| Node {
                id: r.id.clone(),
                slug: r.slug.clone(),
                name: r.name.clone(),
                position: r.position,
                children: children(rows, Some(&r.id)),
            })
            .collect()
    }
    children(rows, None)
}

/// The ids of `root` and everything below it.
pub fn descendants(rows: &[CategoryRow], root: &str) -> Vec<String> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].clone();
        out.extend(rows.iter().filter(|r| r.parent_id.as_deref() == Some(&parent)).map(|r| r.id.clone()));
        i += 1;
    }
    out
}

pub struct CategoryInput {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub parent_id: Option<Option<String>>,
    pub position: Option<i32>,
}

pub async fn create(db: &Db, input: CategoryInput) -> Result<CategoryRow, CatalogError> {
    let name = domain::parse_title(input.name.as_deref().unwrap_or_default(), "name")?;
    let slug = match &input.slug {
        Some(s) => domain::parse_slug(s)?,
        None => domain::slugify(&name),
    };
    let all = store::categories(db).await?;
    let parent_id = input.parent_id.flatten();
    if let Some(p) = &parent_id
        && !all.iter().any(|c| &c.id == p)
    {
        return Err(domain::invalid("parent_id", "unknown_category", "no such category").into());
    }
    if all.iter().any(|c| c.slug == slug) {
        return Err(CatalogError::SlugTaken(slug));
    }
    let row = CategoryRow { id: CategoryId::new().to_string(), parent_id, slug, name, position: input.position.unwrap_or(0) };
    store::insert_category(db, &row).await?;
    Ok(row)
}

pub async fn update(db: &Db, id: &str, input: CategoryInput) -> Result<CategoryRow, CatalogError> {
    let all = store::categories(db).await?;
    let mut row = all.iter().find(|c| c.id == id).cloned().ok_or(CatalogError::CategoryNotFound)?;
    if let Some(name) = &input.name {
        row.name = domain::parse_title(name, "name")?;
    }
    if let Some(slug) = &input.slug {
        let slug = domain::parse_slug(slug)?;
        if all.iter().any(|c| c.slug == slug && c.id != id) {
            return Err(CatalogError::SlugTaken(slug));
        }
        row.slug = slug;
    }
    if let Some(parent) = input.parent_id {
        if let Some(p) = &parent {
            if !all.iter().any(|c| &c.id == p) {
                return Err(domain::invalid("parent_id", "unknown_category", "no such category").into());
            }
            // A category cannot move under itself or its own descendants.
            if descendants(&all, id).contains(p) {
                return Err(domain::invalid("parent_id", "category_cycle", "a category cannot sit under itself").into());
            }
        }
        row.parent_id = parent;
    }
    if let Some(position) = input.position {
        row.position = position;
    }
    store::update_category(db, &row).await?;
    Ok(row)
}

pub async fn delete(db: &Db, id: &str) -> Result<(), CatalogError> {
    let all = store::categories(db).await?;
    if !all.iter().any(|c| c.id == id) {
        return Err(CatalogError::CategoryNotFound);
    }
    if all.iter().any(|c| c.parent_id.as_deref() == Some(id)) {
        return Err(CatalogError::CategoryHasChildren);
    }
    store::delete_category(db, id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, parent: Option<&str>) -> CategoryRow {
        CategoryRow { id: id.into(), parent_id: parent.map(Into::into), slug: id.into(), name: id.into(), position: 0 }
    }

    #[test]
    fn trees_and_descendants() {
        let rows = vec![row("men", None), row("shirts", Some("men")), row("tees", Some("shirts")), row("women", None)];
        let t = tree(&rows);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].children[0].children[0].id, "tees");
        assert_eq!(descendants(&rows, "men"), vec!["men", "shirts", "tees"]);
        assert_eq!(descendants(&rows, "women"), vec!["women"]);
    }
}
