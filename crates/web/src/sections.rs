//! The console's sections, declared: which staff API each lists, its
//! columns, and the forms that change it. The API checks every permission
//! again; the ones named here only decide what a page offers.

use axum::http::Method;
use kernel::auth::Permission::{self, *};

use crate::console::Kind::*;
use crate::console::Show::{Flag, Link, Money as Cash, Picture, PriceRange, Stock, Text as Plain, When as At};
use crate::console::{Action, After, Column, Explode, Field, Kind, Menu, Record, Related, Section, column as col, field, hinted, required};

const ROLES: &[&str] = &["customer", "admin", "catalog_manager", "order_manager", "support"];
const STAFF_ROLES: &[&str] = &["admin", "catalog_manager", "order_manager", "support"];
const PERMISSIONS: &[&str] = &[
    "catalog:write", "inventory:write", "orders:read", "orders:write", "customers:read", "customers:write",
    "marketing:write", "settings:write", "staff:manage",
];

const fn act(key: &'static str, label: &'static str, method: Method, path: &'static str, fields: &'static [Field], permission: Permission, after: After) -> Action {
    Action { key, label, method, path, fields, permission, danger: false, fill: true, after }
}

/// An action whose form starts empty: it adds something rather than edits.
const fn add(key: &'static str, label: &'static str, method: Method, path: &'static str, fields: &'static [Field], permission: Permission, after: After) -> Action {
    Action { key, label, method, path, fields, permission, danger: false, fill: false, after }
}

const fn danger(key: &'static str, label: &'static str, method: Method, path: &'static str, fields: &'static [Field], permission: Permission, after: After) -> Action {
    Action { key, label, method, path, fields, permission, danger: true, fill: true, after }
}

const fn section(menu: Menu, path: &'static str, title: &'static str, read: Permission, list: &'static str, key: &'static str, columns: &'static [Column]) -> Section {
    Section {
        menu,
        path,
        title,
        intro: "",
        links: &[],
        record_links: &[],
        read,
        list,
        filters: &[],
        columns,
        explode: Explode::No,
        record: Record::None,
        key,
        create: &[],
        row: &[],
        actions: &[],
        rendered: false,
        related: &[],
    }
}

// Orders: the forms on an order's page (drawn by `admin::order`).

pub const ORDER_ACTIONS: &[Action] = &[
    add("note", "Add a note", Method::POST, "/api/v1/admin/orders/{id}/notes", &[required("text", "Note", Long)], OrdersWrite, After::Stay),
    add("refund", "Refund", Method::POST, "/api/v1/admin/orders/{id}/refunds", &[
        required("amount", "Amount", Kind::Money),
        required("reason", "Reason", Text),
        field("restock", "Put the items back in stock", Bool),
    ], OrdersWrite, After::Stay),
    act("delivered", "Mark as delivered", Method::POST, "/api/v1/admin/orders/{id}/delivered", &[], OrdersWrite, After::Stay),
    danger("cancel", "Cancel the order", Method::POST, "/api/v1/admin/orders/{id}/cancel", &[field("reason", "Reason", Text)], OrdersWrite, After::Stay),
];

const RETURNS: Section = Section {
    intro: "Customers ask to send items back from their order page; approve, receive and refund each here.",
    filters: &[field("status", "Status", Choice(&["requested", "approved", "rejected", "received", "refunded"]))],
    row: &[
        act("approve", "Approve", Method::POST, "/api/v1/admin/returns/{id}/approve", &[], OrdersWrite, After::Stay),
        act("receive", "Received", Method::POST, "/api/v1/admin/returns/{id}/receive", &[], OrdersWrite, After::Stay),
        act("refund", "Refund", Method::POST, "/api/v1/admin/returns/{id}/refund", &[], OrdersWrite, After::Stay),
        act("refund_restock", "Refund and restock", Method::POST, "/api/v1/admin/returns/{id}/refund", &[field("restock", "Restock", Const("true"))], OrdersWrite, After::Stay),
        danger("reject", "Reject", Method::POST, "/api/v1/admin/returns/{id}/reject", &[], OrdersWrite, After::Stay),
    ],
    ..section(Menu::Sales, "/admin/returns", "Returns", OrdersRead, "/api/v1/admin/returns", "id", &[
        col("Asked", "/created_at", At),
        col("Order", "/order_id", Plain),
        col("Status", "/status", Plain),
        col("Reason", "/reason", Plain),
        col("Items", "/items", Plain),
    ])
};

// Catalog

const PRODUCTS: Section = Section {
    links: &[("/admin/products/new", "New product"), ("/admin/products/import", "Import a CSV"), ("/admin/products/export", "Export as CSV")],
    filters: &[
        field("q", "Title or SKU", Text),
        field("status", "Status", Choice(&["draft", "active", "archived"])),
        field("brand", "Brand", Text),
        field("category", "Category", Text),
        field("in_stock", "In stock", Choice(&["true", "false"])),
        field("sort", "Sort", Choice(&["newest", "oldest", "title", "price_asc", "price_desc"])),
    ],
    // A product opens in its editor (`admin::product`), which saves it
    // through the product, variant and inventory routes; deleting it leads
    // back to this list.
    record: Record::Editor,
    actions: &[danger("delete", "Delete the product", Method::DELETE, "/api/v1/admin/products/{id}", &[], CatalogWrite, After::List)],
    ..section(Menu::Catalog, "/admin/products", "Products", CatalogWrite, "/api/v1/admin/products?limit=50", "id", &[
        col("Picture", "/media", Picture),
        col("Product", "/title", Link),
        col("Price", "/variants", PriceRange),
        col("Stock", "/variants", Stock),
        col("Status", "/status", Plain),
        col("Brand", "/brand", Plain),
        col("Updated", "/updated_at", At),
    ])
};

const INVENTORY: Section = Section {
    intro: "Stock of every variant. Open a SKU for its levels per location, to adjust it and to read its history.",
    filters: &[
        field("status", "Product status", Choice(&["draft", "active", "archived"])),
        field("in_stock", "In stock", Choice(&["true", "false"])),
        field("low_stock", "Low on stock", Choice(&["true"])),
        field("brand", "Brand", Text),
    ],
    explode: Explode::Items("variants"),
    record: Record::Key,
    related: &[
        Related {
            title: "Levels per location",
            path: "/api/v1/admin/inventory?sku={id}",
            columns: &[col("Location", "/location", Plain), col("On hand", "/on_hand", Plain), col("Reserved", "/reserved", Plain), col("Available", "/available", Plain)],
            rows: "",
            link: None,
        },
        Related {
            title: "History",
            path: "/api/v1/admin/inventory/{id}/history?limit=100",
            columns: &[
                col("When", "/at", At),
                col("Location", "/location", Plain),
                col("Change", "/delta", Plain),
                col("On hand after", "/on_hand_after", Plain),
                col("Reason", "/reason", Plain),
                col("Reference", "/reference", Plain),
            ],
            rows: "",
            link: None,
        },
    ],
    actions: &[
        act("adjust", "Adjust", Method::POST, "/api/v1/admin/inventory/adjustments", &[
            field("sku", "SKU", Id),
            hinted("delta", "Change", Int, "Positive to add, negative to take away"),
            required("reason", "Reason", Choice(&["received", "damaged", "correction", "returned"])),
            hinted("location", "Location", Text, "A location id; the default location when empty"),
        ], InventoryWrite, After::Stay),
        act("count", "Set the counted stock", Method::PUT, "/api/v1/admin/inventory/{id}", &[
            required("on_hand", "On hand", Int),
            hinted("location", "Location", Text, "A location id; the default location when empty"),
        ], InventoryWrite, After::Stay),
    ],
    ..section(Menu::Catalog, "/admin/inventory", "Inventory", InventoryWrite, "/api/v1/admin/products?limit=50", "sku", &[
        col("SKU", "/sku", Link),
        col("Product", "/parent", Plain),
        col("Variant", "/title", Plain),
        col("On hand", "/on_hand", Plain),
        col("Reserved", "/reserved", Plain),
        col("Available", "/available", Plain),
        col("Low at", "/low_stock_threshold", Plain),
    ])
};

const LOCATIONS: Section = Section {
    create: &[add("create", "Add a location", Method::POST, "/api/v1/admin/stock-locations", &[required("name", "Name", Text)], InventoryWrite, After::Stay)],
    row: &[danger("delete", "Remove", Method::DELETE, "/api/v1/admin/stock-locations/{id}", &[], InventoryWrite, After::Stay)],
    ..section(Menu::Catalog, "/admin/locations", "Locations", InventoryWrite, "/api/v1/admin/stock-locations", "id", &[
        col("Name", "/name", Plain),
        col("Id", "/id", Plain),
        col("Default", "/is_default", Flag),
    ])
};

const CATEGORIES: Section = Section {
    intro: "The shop's aisles. A category with sub-categories cannot be removed.",
    explode: Explode::Tree("children"),
    record: Record::InList,
    create: &[add("create", "Add a category", Method::POST, "/api/v1/admin/categories", &[
        required("name", "Name", Text),
        field("slug", "Address (slug)", Text),
        hinted("parent_id", "Inside", Text, "The parent category's id; top level when empty"),
        field("position", "Position", Int),
    ], CatalogWrite, After::Stay)],
    actions: &[
        act("update", "Save", Method::PATCH, "/api/v1/admin/categories/{id}", &[
            required("name", "Name", Text),
            field("slug", "Address (slug)", Text),
            hinted("parent_id", "Inside", Text, "The parent category's id, to move it there"),
            field("position", "Position", Int),
        ], CatalogWrite, After::Stay),
        danger("delete", "Remove", Method::DELETE, "/api/v1/admin/categories/{id}", &[], CatalogWrite, After::List),
    ],
    ..section(Menu::Catalog, "/admin/categories", "Categories", CatalogWrite, "/api/v1/categories", "id", &[
        col("Name", "/name", Link),
        col("Slug", "/slug", Plain),
        col("Id", "/id", Plain),
        col("Position", "/position", Plain),
    ])
};

const SYNONYMS: Section = Section {
    intro: "Words shoppers use for the same thing: a search for one finds the others.",
    create: &[act("save", "Save the synonyms", Method::PUT, "/api/v1/admin/search/synonyms", &[
        hinted("groups", "Groups", Groups, "One group per line, its words separated by commas, e.g. sofa, couch, settee"),
    ], CatalogWrite, After::Stay)],
    ..section(Menu::Catalog, "/admin/synonyms", "Synonyms", CatalogWrite, "/api/v1/admin/search/synonyms", "groups", &[])
};

const NO_RESULTS: Section = Section {
    intro: "What shoppers searched for and did not find, most asked first: words for synonyms, or products to stock.",
    create: &[
        act("reindex", "Rebuild the search index", Method::POST, "/api/v1/admin/search/reindex", &[], CatalogWrite, After::Stay),
        act("recommendations", "Recount the recommendations", Method::POST, "/api/v1/admin/search/recommendations/rebuild", &[], CatalogWrite, After::Show),
    ],
    ..section(Menu::Catalog, "/admin/searches", "Searches without results", CatalogWrite, "/api/v1/admin/search/no-results", "query", &[
        col("Query", "/query", Plain),
        col("Searches", "/searches", Plain),
    ])
};

// Customers and staff

const USER_COLUMNS: &[Column] = &[
    col("Email", "/email", Link),
    col("Name", "/name", Plain),
    col("Roles", "/roles", Plain),
    col("Verified", "/email_verified", Flag),
    col("Two-step", "/mfa_enabled", Flag),
    col("Disabled", "/disabled", Flag),
    col("Since", "/created_at", At),
];

const CUSTOMERS: Section = Section {
    filters: &[field("email", "Email", Text)],
    record: Record::Api("/api/v1/admin/users/{id}"),
    related: &[Related {
        title: "Orders",
        path: "/api/v1/admin/orders?customer={id}&limit=100",
        columns: &[col("Order", "/number", Link), col("Placed", "/placed_at", At), col("Status", "/status", Plain), col("Total", "/total", Cash)],
        rows: "",
        link: Some(("/admin/orders/{id}", "id")),
    }],
    actions: &[
        danger("disable", "Disable the account", Method::PATCH, "/api/v1/admin/users/{id}", &[field("disabled", "Disabled", Const("true"))], StaffManage, After::Stay),
        act("enable", "Enable the account", Method::PATCH, "/api/v1/admin/users/{id}", &[field("disabled", "Disabled", Const("false"))], StaffManage, After::Stay),
    ],
    ..section(Menu::Customers, "/admin/customers", "Customers", CustomersRead, "/api/v1/admin/users?role=customer&limit=50", "id", USER_COLUMNS)
};

const STAFF: Section = Section {
    intro: "Everyone with a role. admin may do everything; catalog_manager: catalog and inventory; order_manager: orders, inventory, reading customers; support: reading orders, customers.",
    filters: &[field("role", "Role", Choice(STAFF_ROLES)), field("email", "Email", Text)],
    record: Record::Api("/api/v1/admin/users/{id}"),
    actions: &[act("roles", "Save the roles", Method::PATCH, "/api/v1/admin/users/{id}", &[field("roles", "Roles", Multi(ROLES))], StaffManage, After::Stay)],
    ..section(Menu::Settings, "/admin/staff", "Staff", StaffManage, "/api/v1/admin/users?limit=50", "id", USER_COLUMNS)
};

const API_KEYS: Section = Section {
    intro: "Keys for the shop's own programs, each with the permissions it needs (at most yours). A new key is shown once.",
    create: &[add("create", "Make a key", Method::POST, "/api/v1/admin/api-keys", &[
        required("name", "Name", Text),
        field("permissions", "Permissions", Multi(PERMISSIONS)),
        hinted("expires_at", "Expires", Kind::When, "UTC; never when empty"),
    ], StaffManage, After::Show)],
    row: &[danger("revoke", "Revoke", Method::DELETE, "/api/v1/admin/api-keys/{id}", &[], StaffManage, After::Stay)],
    ..section(Menu::Settings, "/admin/api-keys", "API keys", StaffManage, "/api/v1/admin/api-keys", "id", &[
        col("Name", "/name", Plain),
        col("Starts with", "/prefix", Plain),
        col("Permissions", "/permissions", Plain),
        col("Made", "/created_at", At),
        col("Expires", "/expires_at", At),
        col("Last used", "/last_used_at", At),
        col("Revoked", "/revoked", Flag),
    ])
};

const AUDIT: Section = section(Menu::Settings, "/admin/audit", "Audit log", StaffManage, "/api/v1/admin/audit?limit=50", "id", &[
    col("When", "/at", At),
    col("What", "/action", Plain),
    col("By", "/actor_id", Plain),
    col("On", "/subject_id", Plain),
    col("From", "/ip", Plain),
    col("Detail", "/detail", Plain),
]);

// Marketing and settings

const DISCOUNT_FIELDS: &[Field] = &[
    required("code", "Code", Text),
    required("kind", "Kind", Choice(&["percentage", "fixed", "free_shipping"])),
    hinted("percent_off", "Percent off", Int, "For a percentage"),
    hinted("amount_off", "Amount off", Kind::Money, "For a fixed amount"),
    hinted("currency", "Currency", Text, "For a fixed amount, e.g. USD"),
    field("min_subtotal", "Minimum subtotal", Kind::Money),
    field("free_shipping", "Free shipping as well", Bool),
    hinted("product_ids", "Only these products", List, "Product ids, comma-separated; the whole order when empty"),
    hinted("category_ids", "Only these categories", List, "Category ids, comma-separated"),
    field("starts_at", "Starts", Kind::When),
    field("ends_at", "Ends", Kind::When),
    field("usage_limit", "Uses in all", Int),
    field("per_customer_limit", "Uses per customer", Int),
    field("active", "Active", Bool),
];

const DISCOUNTS: Section = Section {
    record: Record::Api("/api/v1/admin/discounts/{id}"),
    create: &[add("create", "Add a discount code", Method::POST, "/api/v1/admin/discounts", DISCOUNT_FIELDS, MarketingWrite, After::Record)],
    actions: &[
        act("update", "Save", Method::PUT, "/api/v1/admin/discounts/{id}", DISCOUNT_FIELDS, MarketingWrite, After::Stay),
        danger("delete", "Remove", Method::DELETE, "/api/v1/admin/discounts/{id}", &[], MarketingWrite, After::List),
    ],
    ..section(Menu::Marketing, "/admin/discounts", "Discounts", MarketingWrite, "/api/v1/admin/discounts?limit=50", "id", &[
        col("Code", "/code", Link),
        col("Kind", "/kind", Plain),
        col("Percent", "/percent_off", Plain),
        col("Amount", "/amount_off", Cash),
        col("Used", "/times_used", Plain),
        col("Ends", "/ends_at", At),
        col("Active", "/active", Flag),
    ])
};

const SHIPPING_FIELDS: &[Field] = &[
    required("name", "Name", Text),
    Field { hint: "Two-letter codes, comma-separated", ..required("countries", "Countries", List) },
    Field { hint: "e.g. USD; the amounts below are in it", ..required("currency", "Currency", Text) },
    field("flat_amount", "Price", Kind::Money),
    hinted("weight_bands", "Or by weight", Json, r#"e.g. [{"up_to_grams": 1000, "amount": 500}], amounts in cents"#),
    field("free_above", "Free above", Kind::Money),
    required("min_days", "Days, at least", Int),
    required("max_days", "Days, at most", Int),
    field("active", "Active", Bool),
];

const SHIPPING: Section = Section {
    record: Record::InList,
    create: &[add("create", "Add a shipping method", Method::POST, "/api/v1/admin/shipping-methods", SHIPPING_FIELDS, SettingsWrite, After::Record)],
    actions: &[
        act("update", "Save", Method::PUT, "/api/v1/admin/shipping-methods/{id}", SHIPPING_FIELDS, SettingsWrite, After::Stay),
        danger("delete", "Remove", Method::DELETE, "/api/v1/admin/shipping-methods/{id}", &[], SettingsWrite, After::List),
    ],
    ..section(Menu::Settings, "/admin/shipping", "Shipping", SettingsWrite, "/api/v1/admin/shipping-methods", "id", &[
        col("Name", "/name", Link),
        col("Countries", "/countries", Plain),
        col("Price", "/flat_amount", Cash),
        col("Free above", "/free_above", Cash),
        col("Days", "/max_days", Plain),
        col("Active", "/active", Flag),
    ])
};

const TAX_FIELDS: &[Field] = &[
    required("country", "Country", Text),
    hinted("region", "Region", Text, "e.g. CA; the whole country when empty"),
    required("name", "Name", Text),
    Field { hint: "In hundredths of a percent: 725 is 7.25 %", ..required("rate_bp", "Rate", Int) },
    field("shipping_taxable", "Shipping is taxed", Bool),
];

const TAXES: Section = Section {
    record: Record::InList,
    create: &[add("create", "Add a tax rate", Method::POST, "/api/v1/admin/tax-rates", TAX_FIELDS, SettingsWrite, After::Record)],
    actions: &[
        act("update", "Save", Method::PUT, "/api/v1/admin/tax-rates/{id}", TAX_FIELDS, SettingsWrite, After::Stay),
        danger("delete", "Remove", Method::DELETE, "/api/v1/admin/tax-rates/{id}", &[], SettingsWrite, After::List),
    ],
    ..section(Menu::Settings, "/admin/taxes", "Taxes", SettingsWrite, "/api/v1/admin/tax-rates", "id", &[
        col("Name", "/name", Link),
        col("Country", "/country", Plain),
        col("Region", "/region", Plain),
        col("Rate (bp)", "/rate_bp", Plain),
        col("Shipping taxed", "/shipping_taxable", Flag),
    ])
};

// Notifications

const NOTIFICATIONS: Section = Section {
    intro: "Every email, text and webhook delivery, newest first.",
    filters: &[
        field("status", "Status", Choice(&["queued", "sent", "failed", "dead"])),
        field("channel", "Channel", Choice(&["email", "sms", "webhook"])),
        field("recipient", "Recipient", Text),
        field("event_type", "Event", Text),
    ],
    record: Record::Api("/api/v1/admin/notifications/{id}"),
    row: &[act("retry", "Retry", Method::POST, "/api/v1/admin/notifications/{id}/retry", &[], CustomersWrite, After::Stay)],
    actions: &[act("retry", "Retry", Method::POST, "/api/v1/admin/notifications/{id}/retry", &[], CustomersWrite, After::Stay)],
    ..section(Menu::Customers, "/admin/notifications", "Notifications", CustomersRead, "/api/v1/admin/notifications?limit=50", "id", &[
        col("Made", "/created_at", At),
        col("Channel", "/channel", Plain),
        col("To", "/recipient", Link),
        col("Subject", "/subject", Plain),
        col("Status", "/status", Plain),
        col("Tries", "/attempts", Plain),
        col("Last error", "/last_error", Plain),
    ])
};

const MAILBOX: Section = Section {
    intro: "With no mail server or SMS provider set up, messages land here instead.",
    filters: &[field("to", "To", Text), field("channel", "Channel", Choice(&["email", "sms"]))],
    record: Record::Api("/api/v1/admin/mailbox/{id}"),
    rendered: true,
    ..section(Menu::Customers, "/admin/mailbox", "Mailbox", CustomersRead, "/api/v1/admin/mailbox?limit=50", "id", &[
        col("Received", "/received_at", At),
        col("Channel", "/channel", Plain),
        col("To", "/to", Plain),
        col("Subject", "/subject", Link),
    ])
};

const TEMPLATE_FIELDS: &[Field] = &[
    hinted("subject", "Subject", Text, "Email only"),
    hinted("html", "HTML", Long, "Email only; plain text alone when empty"),
    required("text", "Text", Long),
];

const TEMPLATES: Section = Section {
    intro: "The wording of each message, in minijinja. A template that does not render with sample data is refused when saved.",
    record: Record::Api("/api/v1/admin/notification-templates/{id}"),
    actions: &[
        act("preview", "Preview", Method::POST, "/api/v1/admin/notification-templates/{id}/preview", TEMPLATE_FIELDS, SettingsWrite, After::Show),
        act("save", "Save", Method::PUT, "/api/v1/admin/notification-templates/{id}", TEMPLATE_FIELDS, SettingsWrite, After::Stay),
        danger("reset", "Back to the shipped wording", Method::DELETE, "/api/v1/admin/notification-templates/{id}", &[], SettingsWrite, After::Stay),
    ],
    ..section(Menu::Marketing, "/admin/templates", "Templates", SettingsWrite, "/api/v1/admin/notification-templates", "key", &[
        col("Message", "/key", Link),
        col("Channel", "/channel", Plain),
        col("About", "/description", Plain),
        col("Changed", "/customised", Flag),
    ])
};

const WEBHOOK_FIELDS: &[Field] = &[
    required("url", "Address", Url),
    Field { hint: "order.*, * or event types, comma-separated", ..required("event_types", "Events", List) },
    field("description", "Description", Text),
];

const WEBHOOKS: Section = Section {
    intro: "Your systems hear about the shop's events through signed POSTs (Emporium-Signature).",
    record: Record::Api("/api/v1/admin/webhooks/{id}"),
    create: &[add("create", "Add an endpoint", Method::POST, "/api/v1/admin/webhooks", WEBHOOK_FIELDS, SettingsWrite, After::Record)],
    actions: &[
        act("test", "Send a test event", Method::POST, "/api/v1/admin/webhooks/{id}/test", &[], SettingsWrite, After::Show),
        act("update", "Save", Method::PATCH, "/api/v1/admin/webhooks/{id}", &[
            required("url", "Address", Url),
            Field { hint: "order.*, * or event types, comma-separated", ..required("event_types", "Events", List) },
            field("description", "Description", Text),
            field("enabled", "Enabled", Bool),
        ], SettingsWrite, After::Stay),
        act("rotate", "New signing secret", Method::PATCH, "/api/v1/admin/webhooks/{id}", &[field("rotate_secret", "Rotate", Const("true"))], SettingsWrite, After::Stay),
        danger("delete", "Remove", Method::DELETE, "/api/v1/admin/webhooks/{id}", &[], SettingsWrite, After::List),
    ],
    ..section(Menu::Settings, "/admin/webhooks", "Webhooks", SettingsWrite, "/api/v1/admin/webhooks", "id", &[
        col("Address", "/url", Link),
        col("Events", "/event_types", Plain),
        col("Enabled", "/enabled", Flag),
        col("Why off", "/disabled_reason", Plain),
        col("Last success", "/last_success_at", At),
    ])
};

/// Every section, in the console's menu order.
pub static SECTIONS: &[Section] = &[
    PRODUCTS, RETURNS, INVENTORY, LOCATIONS, CATEGORIES, CUSTOMERS, DISCOUNTS, SHIPPING, TAXES, SYNONYMS, NO_RESULTS,
    NOTIFICATIONS, MAILBOX, TEMPLATES, WEBHOOKS, STAFF, API_KEYS, AUDIT,
];
