// Commands to a subject's devices on its page: what was sent, and where each one got to
// (queued → sent → acknowledged | failed | expired). Operators and above may ask a device to
// report now or to report every 15 s for half an hour (pursuit by hand). Text only (textContent).

import { get, post, may } from "./api.js";
import { h, clear, when } from "./ui.js";

const STATE_HINT = {
  queued: "waiting to be sent",
  sent: "sent; no answer yet (phones never answer)",
  acknowledged: "done, the device says",
  failed: "the device could not do it",
  expired: "the device did not answer in time",
  cancelled: "withdrawn (superseded)",
};

function describe(command) {
  const args = Object.entries(command.args || {})
    .map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
  return `${command.type.replace(/_/g, " ")}${args ? ` (${args})` : ""}`;
}

function row(command) {
  const origin = command.origin.startsWith("pursuit") ? `pursuit, alert ${command.alert_id}` : command.origin;
  const answered = command.answered_at ? ` · answered ${when(command.answered_at)}` : "";
  return h(
    "li",
    { class: `command state-${command.state}`, dataset: { commandId: command.id, state: command.state } },
    h("span", {}, describe(command)),
    h("span", { class: "muted small", title: STATE_HINT[command.state] || "" }, ` ${command.state} · ${origin} · ${when(command.created_at)}${answered}`),
    command.detail ? h("span", { class: "muted small" }, ` · ${command.detail}`) : null,
  );
}

async function fill(list, deviceId) {
  const commands = await get(`/devices/${encodeURIComponent(deviceId)}/commands`, { query: { limit: 10 } });
  clear(list).append(...(commands.length ? commands.map(row) : [h("li", { class: "muted small" }, "No commands.")]));
}

export async function showCommands(container, subject) {
  let assignments;
  try {
    assignments = await get(`/subjects/${subject.id}/assignments`);
  } catch (error) {
    clear(container).append(h("p", { class: "status error" }, error.message));
    return;
  }
  const now = Date.now();
  const held = assignments.filter((a) => new Date(a.from).getTime() <= now && (!a.to || new Date(a.to).getTime() > now));
  if (!held.length) {
    clear(container).append(h("p", { class: "muted small" }, "No device held now."));
    return;
  }
  clear(container);
  for (const assignment of held) {
    const deviceId = assignment.device_id;
    const list = h("ul", { class: "command-list", dataset: { deviceId } });
    const message = h("p", { class: "status", hidden: true });
    const send = async (body) => {
      try {
        await post(`/devices/${encodeURIComponent(deviceId)}/commands`, body);
        await fill(list, deviceId);
      } catch (error) {
        message.hidden = false;
        message.textContent = error.message;
      }
    };
    const buttons = may("admin", "supervisor", "operator")
      ? h(
          "div",
          { class: "row" },
          h("button", { type: "button", class: "link", onclick: () => send({ type: "locate_now" }) }, "locate now"),
          h(
            "button",
            { type: "button", class: "link", onclick: () => send({ type: "set_interval", args: { interval_s: 15, duration_s: 1800 } }) },
            "report every 15 s for 30 min",
          ),
        )
      : null;
    container.append(h("h4", {}, `${deviceId} (${assignment.role})`), buttons, message, list);
    try {
      await fill(list, deviceId);
    } catch (error) {
      clear(list).append(h("li", { class: "status error" }, error.message));
    }
  }
}
