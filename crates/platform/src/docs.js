"use strict";
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
  kids.forEach(k => e.append(k));
  return e;
};
fetch("/api/openapi.json").then(r => r.json()).then(doc => {
  const main = document.getElementById("main");
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}`;
  if (doc.info.description) main.append(el("p", {}, doc.info.description));
  const byTag = {};
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags && op.tags[0]) || "other";
      (byTag[tag] = byTag[tag] || []).push([method, path, op]);
    }
  }
  for (const tag of Object.keys(byTag).sort()) {
    main.append(el("h2", {}, tag));
    for (const [method, path, op] of byTag[tag]) {
      const body = el("div", { class: "body" });
      if (op.summary || op.description) body.append(el("p", {}, op.summary || op.description));
      if (op.parameters) body.append(el("h4", {}, "Parameters"), el("pre", {}, JSON.stringify(op.parameters, null, 2)));
      if (op.requestBody) body.append(el("h4", {}, "Request body"), el("pre", {}, JSON.stringify(op.requestBody, null, 2)));
      body.append(el("h4", {}, "Responses"), el("pre", {}, JSON.stringify(op.responses, null, 2)));
      main.append(el("details", {}, el("summary", {}, el("span", { class: "m " + method }, method), " ", path), body));
    }
  }
  const schemas = (doc.components && doc.components.schemas) || {};
  if (Object.keys(schemas).length) {
    main.append(el("h2", {}, "Schemas"));
    for (const name of Object.keys(schemas).sort()) {
      main.append(el("details", {}, el("summary", {}, name), el("div", { class: "body" }, el("pre", {}, JSON.stringify(schemas[name], null, 2)))));
    }
  }
});
