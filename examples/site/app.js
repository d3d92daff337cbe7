// Upload with fetch + FormData and keep the table of stored files current.
"use strict";

const form = document.getElementById("upload-form");
const statusLine = document.getElementById("status");
const tableBody = document.getElementById("stored-files");

function formatSize(bytes) {
  if (bytes < 1024) return bytes + " B";
  if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KiB";
  return (bytes / (1024 * 1024)).toFixed(1) + " MiB";
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;  // textContent: file names are never interpreted as HTML
  if (className) td.className = className;
  return td;
}

function render(files) {
  tableBody.replaceChildren();
  if (files.length === 0) {
    const row = document.createElement("tr");
    const td = cell("Nothing stored yet.");
    td.colSpan = 4;
    row.append(td);
    tableBody.append(row);
    return;
  }
  for (const file of files) {
    const row = document.createElement("tr");
    row.className = "stored-file";
    row.dataset.name = file.filename;
    row.dataset.sha256 = file.sha256;
    const link = document.createElement("a");
    link.href = file.url;
    link.textContent = file.filename;
    const nameCell = document.createElement("td");
    nameCell.append(link);
    row.append(nameCell, cell(formatSize(file.size)), cell(file.sha256, "hash"),
               cell(file.note || ""));
    tableBody.append(row);
  }
}

async function refresh() {
  const response = await fetch("/files");
  render(await response.json());
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = document.getElementById("submit-button");
  button.disabled = true;
  statusLine.className = "";
  statusLine.textContent = "Uploading…";
  try {
    const response = await fetch(form.action, { method: "POST", body: new FormData(form) });
    const text = await response.text();
    if (!response.ok) throw new Error(response.status + " " + text);
    const result = JSON.parse(text);
    statusLine.textContent = "Stored " + result.stored.length + " file(s).";
    statusLine.dataset.done = String(Date.now());
    form.reset();
    await refresh();
  } catch (error) {
    statusLine.className = "error";
    statusLine.textContent = "Upload failed: " + error.message;
  } finally {
    button.disabled = false;
  }
});

refresh();
