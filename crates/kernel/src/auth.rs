//! Who may do what: roles, the permissions they grant, and the claims an
//! access token carries. Every service reads these; only auth issues them.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A named permission, written `area:verb` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum Permission {
    #[serde(rename = "catalog:write")]
    CatalogWrite,
    #[serde(rename = "inventory:write")]
    InventoryWrite,
    #[serde(rename = "orders:read")]
    OrdersRead,
    #[serde(rename = "orders:write")]
    OrdersWrite,
    #[serde(rename = "customers:read")]
    CustomersRead,
    #[serde(rename = "customers:write")]
    CustomersWrite,
    #[serde(rename = "marketing:write")]
    MarketingWrite,
    #[serde(rename = "settings:write")]
    SettingsWrite,
    #[serde(rename = "staff:manage")]
    StaffManage,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::CatalogWrite,
        Permission::InventoryWrite,
        Permission::OrdersRead,
        Permission::OrdersWrite,
        Permission::CustomersRead,
        Permission::CustomersWrite,
        Permission::MarketingWrite,
        Permission::SettingsWrite,
        Permission::StaffManage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::CatalogWrite => "catalog:write",
            Permission::InventoryWrite => "inventory:write",
            Permission::OrdersRead => "orders:read",
            Permission::OrdersWrite => "orders:write",
            Permission::CustomersRead => "customers:read",
            Permission::CustomersWrite => "customers:write",
            Permission::MarketingWrite => "marketing:write",
            Permission::SettingsWrite => "settings:write",
            Permission::StaffManage => "staff:manage",
        }
    }

    pub fn parse(text: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role: `customer` for shoppers, the others for staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Admin,
    CatalogManager,
    OrderManager,
    Support,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Customer, Role::Admin, Role::CatalogManager, Role::OrderManager, Role::Support];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
            Role::CatalogManager => "catalog_manager",
            Role::OrderManager => "order_manager",
            Role::Support => "support",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn is_staff(self) -> bool {
        self != Role::Customer
    }

    /// What the role may do. Customers act only on their own objects, which
    /// needs no permission.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Customer => &[],
            Role::Admin => &Permission::ALL,
            Role::CatalogManager => &[CatalogWrite, InventoryWrite],
            Role::OrderManager => &[OrdersRead, OrdersWrite, InventoryWrite, CustomersRead],
            Role::Support => &[OrdersRead, CustomersRead, CustomersWrite],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The union of the permissions of `roles`, sorted and without repeats.
pub fn permissions_of(roles: &[Role]) -> Vec<Permission> {
    let mut all: Vec<Permission> = roles.iter().flat_map(|r| r.permissions().iter().copied()).collect();
    all.sort();
    all.dedup();
    all
}

/// The claims of an access token (a JWT signed by auth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (`usr_…`).
    pub sub: String,
    pub roles: Vec<Role>,
    pub permissions: Vec<Permission>,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// One audience or several, as JWT allows.
    pub aud: Audience,
    pub jti: String,
    /// Whether the email address was verified when the token was issued
    /// (a refresh after verifying brings it up to date).
    #[serde(default)]
    pub email_verified: bool,
    /// The user's token generation when the token was issued: signing out,
    /// a password change, a role change or disabling raises the user's
    /// generation, and tokens of an older one are refused.
    #[serde(default, rename = "gen")]
    pub generation: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), serde_json::json!(p.as_str()));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn admins_can_do_everything_and_customers_nothing_staff_only() {
        assert_eq!(permissions_of(&[Role::Admin]), Permission::ALL.to_vec());
        assert!(permissions_of(&[Role::Customer]).is_empty());
        let both = permissions_of(&[Role::CatalogManager, Role::OrderManager]);
        assert!(both.contains(&Permission::CatalogWrite) && both.contains(&Permission::OrdersWrite));
        assert!(!both.contains(&Permission::StaffManage));
        assert!(!permissions_of(&[Role::CatalogManager]).contains(&Permission::OrdersRead), "the catalog's people do not see orders");
    }
}
