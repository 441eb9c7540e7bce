// The web page end to end, in Debian's Chromium driven by playwright-core:
//   node e2e/ui.mjs <base-url> <screenshot-dir>
// run by crates/manage-tasks/tests/browser.rs, which registers the tasks
// (deploy, sleeper, fails, xss) and starts the server. With MANAGE_TASKS and
// TASK_STORE set it also creates a token at the end and signs in with it.
// Every step asserts something; the first failure exits non-zero.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node e2e/ui.mjs <base-url> <screenshot-dir>");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
setTimeout(() => {
  console.error("not ok - the whole scenario took longer than 240 s");
  process.exit(3);
}, 240_000).unref();

const XSS_SCRIPT = "<script>window.__xss=1</script>";
const XSS_IMG = '"><img src=x onerror="window.__xss=1">';

function ok(cond, what) {
  if (!cond) throw new Error("assertion failed: " + what);
  console.log("ok - " + what);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn until it returns something truthy.
async function until(what, fn, timeout = 15_000) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
    } catch (e) {
      last = undefined;
      if (Date.now() > end) throw new Error("timed out: " + what + " (" + e.message + ")");
    }
    if (last) {
      console.log("ok - " + what);
      return last;
    }
    if (Date.now() > end) throw new Error("timed out: " + what);
    await sleep(100);
  }
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const problems = [];
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && /Refused to|Content Security Policy/i.test(m.text())) problems.push("console: " + m.text());
  });
  const go = async (hash) => {
    await page.goto(base + "/" + hash);
  };
  const badgeState = (sel) => page.locator(sel + " .badge").first().getAttribute("data-state");
  const runState = async () => page.locator("#run-facts .badge").first().getAttribute("data-state").catch(() => null);

  // -------------------------------------------------------------- task list
  await go("#/tasks");
  await page.locator("#task-list").waitFor();
  const names = await page.locator("#task-list li h3").allTextContents();
  ok(["deploy", "fails", "sleeper", "xss"].every((n) => names.includes(n)), "the task list shows every task: " + names.join(", "));
  ok((await page.locator('li[data-task="deploy"] .description').textContent()).includes("Deploy a service"), "a task's description is shown");
  await until("each task says when it last ran", async () =>
    (await page.locator('li[data-task="deploy"] .last').textContent()).includes("Never run"));
  ok((await page.locator('li[data-task="xss"] .description').textContent()).includes(XSS_IMG), "a description with markup shows as text");
  await page.screenshot({ path: join(shots, "tasks.png"), fullPage: true });

  // -------------------------------------------------------------- the form
  await page.click('#task-list a[href="#/tasks/deploy"]');
  await page.locator("#run-form").waitFor();
  const field = (p) => page.locator(`.field[data-pointer="${p}"]`);
  const fieldError = (p) => page.locator(`.field[data-pointer="${p}"] > .field-error`);
  ok(await page.getByLabel("Service name").count() === 1, "a label from the title");
  const order = await page.locator('#run-form [data-pointer^="/"]').evaluateAll(
    (els) => els.map((e) => e.dataset.pointer).filter((p) => p.split("/").length === 2));
  ok(JSON.stringify(order) === JSON.stringify(["/name", "/env", "/count", "/target", "/tags", "/dry_run", "/api_key", "/when", "/contact", "/notes"]),
    "fields in the order the schema lists them: " + order.join(" "));
  ok(await field("/name").locator(".required").count() === 1, "a required field is marked");
  ok((await field("/name").locator(".help").textContent()).includes("lower-case"), "help text from the description");
  ok(await page.locator('.field[data-pointer="/env"] select option').allTextContents().then((o) => o.includes("staging") && o.includes("production")), "an enum is a select");
  ok(await field("/env").locator("select").evaluate((s) => s.options[s.selectedIndex].text) === "staging", "the enum's default is selected");
  const count = field("/count").locator("input");
  ok(await count.getAttribute("type") === "number" && await count.getAttribute("min") === "1" && await count.getAttribute("max") === "10", "an integer has min and max");
  ok(await count.inputValue() === "2", "an integer's default is filled in");
  ok(await page.locator('fieldset[data-pointer="/target"] legend').textContent().then((t) => t.includes("Target")), "a nested object is a fieldset");
  ok(await field("/target/port").locator("input").inputValue() === "443", "a $ref to $defs is followed (its default filled in)");
  ok(await field("/api_key").locator("input").getAttribute("type") === "password", "writeOnly is a password input");
  ok(await field("/when").locator("input").getAttribute("type") === "date", "format date is a date input");
  ok(await field("/contact").locator("input").getAttribute("type") === "email", "format email is an email input");
  ok(await field("/dry_run").locator('input[type="checkbox"]').count() === 1, "a boolean is a checkbox");
  ok(await field("/notes").locator("textarea").count() === 1, "oneOf falls back to a JSON box");
  ok(await field("/tags").locator("button.add").count() === 1, "an array of strings can be added to");
  ok(await page.locator(".field").evaluateAll((fs) => fs.every((f) => !f.hasAttribute("style"))), "no inline style");

  // 1. Without the browser's checks: a missing required field and a number over its maximum.
  await page.locator("#run-form").evaluate((f) => { f.noValidate = true; });
  await field("/target/host").locator("input").fill("web-1");
  await count.fill("50");
  await page.click("#run-submit");
  await until("the required field missing is named beside it", async () =>
    (await fieldError("/name").textContent()).includes("required"));
  ok((await fieldError("/count").textContent()).includes("50"), "the maximum is told beside the integer: " + await fieldError("/count").textContent());
  ok(await fieldError("/env").isHidden(), "no error beside a field that is right");
  ok(await page.locator("#form-summary .notice.error").count() === 1, "a summary of the refusal");
  await page.locator("#run-form").evaluate((f) => { f.noValidate = false; });

  // 2. A value the browser accepts but the schema does not: an IPv4 address out of range.
  await field("/name").locator("input").fill("web");
  await field("/env").locator("select").selectOption({ label: "production" });
  await count.fill("3");
  await field("/target/address").locator("input").fill("300.1.2.3");
  await field("/tags").locator("button.add").click();
  await field("/tags").locator(".item input").nth(0).fill("blue");
  await field("/tags").locator("button.add").click();
  await field("/tags").locator(".item input").nth(1).fill("green");
  await field("/tags").locator("button.add").click();
  ok(await field("/tags").locator(".item").count() === 3, "items are added");
  await field("/tags").locator(".item button.remove").nth(2).click();
  ok(await field("/tags").locator(".item").count() === 2, "an item is removed");
  await field("/api_key").locator("input").fill("hunter2");
  await field("/dry_run").locator("input").check();
  await field("/when").locator("input").fill("2026-03-04");
  await page.click("#run-submit");
  await until("the bad address is told beside its field, in the nested object", async () =>
    (await fieldError("/target/address").textContent()).includes("ipv4"));
  ok(await fieldError("/name").isHidden() && await fieldError("/count").isHidden(), "the errors fixed are gone");
  ok(page.url().includes("#/tasks/deploy"), "a refused run stays on the form");
  await page.screenshot({ path: join(shots, "task-form.png"), fullPage: true });

  // The JSON view holds what the form would send.
  await page.check("#json-toggle");
  const asJson = JSON.parse(await page.locator("#args-json").inputValue());
  ok(asJson.count === 3 && asJson.env === "production" && asJson.target.port === 443 && asJson.tags.join() === "blue,green" && asJson.dry_run === true,
    "the JSON view shows the arguments, integers as numbers: " + JSON.stringify(asJson));
  ok(!("notes" in asJson), "an empty optional field is left out");
  await page.uncheck("#json-toggle");
  ok(await field("/tags").locator(".item").count() === 2 && await count.inputValue() === "3", "back from JSON, the form holds the same values");

  // 3. Fixed: it runs.
  await field("/target/address").locator("input").fill("10.0.0.7");
  await page.click("#run-submit");
  await until("submitting opens the run page", async () => /#\/runs\/[0-9a-f-]{36}$/.test(page.url()));

  // -------------------------------------------------------------- the run, live
  const seen = [];
  await until("the log's stderr lines arrive one by one, then the run completes", async () => {
    seen.push(await page.locator("#log .line.stderr").count());
    return (await runState()) === "completed";
  }, 30_000);
  const stderrLines = await page.locator("#log .line.stderr").count();
  ok(stderrLines === 6, "six stderr lines: " + stderrLines);
  ok(seen.some((n) => n > 0 && n < 6), "lines were seen before the run ended (counts seen: " + [...new Set(seen)].join(",") + ")");
  ok(await page.locator("#log .line.stdout").filter({ hasText: "all steps done" }).count() === 1, "a stdout log line, told apart");
  const payload = JSON.parse(await page.locator("#payload").textContent());
  ok(payload.name === "web" && payload.env === "production" && payload.target.address === "10.0.0.7", "the payload, pretty-printed");
  ok((await page.locator("#payload").textContent()).includes("\n  "), "the payload is indented");
  ok((await page.locator("#reason").textContent()).includes("deployed"), "the reason");
  const args = await page.locator("#args").textContent();
  ok(!args.includes("hunter2") && args.includes("********"), "the arguments are shown masked");
  ok(await page.locator("#retry").count() === 1 && await page.locator("#cancel").count() === 0, "an ended run offers retry, not cancel");
  ok((await page.locator("#run-facts").textContent()).includes("1 of 1"), "the attempts");
  await page.screenshot({ path: join(shots, "run-page.png"), fullPage: true });
  const deployRun = page.url();

  // -------------------------------------------------------------- cancel a long run
  await go("#/tasks/sleeper");
  await page.locator("#run-form").waitFor();
  await page.click("#run-submit");
  await until("the long run is running", async () => (await runState()) === "running", 20_000);
  await until("its first line arrives", async () => (await page.locator("#log").textContent()).includes("sleeping"));
  await page.click("#cancel");
  await until("cancel is acknowledged", async () => (await page.locator("#run-message").textContent()).length > 0);
  await until("the run ends cancelled", async () => (await runState()) === "cancelled", 40_000);
  ok(await page.locator("#retry").count() === 1, "a cancelled run can be retried");

  // -------------------------------------------------------------- two failures, retried in bulk
  for (let i = 0; i < 2; i++) {
    await go("#/tasks/fails");
    await page.locator("#run-form").waitFor();
    ok((await page.locator("#run-form").textContent()).includes("takes no arguments"), "a task without arguments says so");
    await page.click("#run-submit");
    await until("failed run " + (i + 1) + " fails", async () => (await runState()) === "failed", 20_000);
    ok((await page.locator("#run-error").textContent()).includes("exit"), "the failure is explained");
  }
  await go("#/runs?task=fails");
  await until("history lists the two failed runs", async () =>
    (await page.locator('#runs-body tr[data-state="failed"]').count()) === 2);
  await until("the filter shows the task", async () => (await page.locator("#filter-task").inputValue()) === "fails");
  await page.check("#select-all");
  ok((await page.locator("#selected-count").textContent()) === "2 selected", "select-all selects both");
  await page.click("#bulk-retry");
  await until("both are retried", async () => (await page.locator("#bulk-message").textContent()).includes("Retried 2 runs"));
  ok(await page.locator("#bulk-failures").count() === 0, "no retry failed");
  await until("the two new runs appear", async () => (await page.locator("#runs-body tr").count()) === 4);
  // A bulk retry of runs that are not over fails per run, and says which.
  await go("#/tasks/sleeper");
  await page.locator("#run-form").waitFor();
  await page.click("#run-submit");
  await until("another long run is running", async () => (await runState()) === "running", 20_000);
  await go("#/runs?task=sleeper&state=running");
  await until("history lists it", async () => (await page.locator("#runs-body tr[data-run]").count()) === 1);
  await page.locator("#runs-body input.select").first().check();
  await page.click("#bulk-retry");
  await until("a run still going cannot be retried, and that is shown", async () =>
    (await page.locator("#bulk-failures").textContent().catch(() => "")).includes("run_active"));
  await page.locator("#runs-body input.select").first().check();
  await page.click("#bulk-cancel");
  await until("bulk cancel asks it to stop", async () => (await page.locator("#bulk-message").textContent()).includes("Cancel sent to 1 run"));
  await go("#/runs");
  await until("the whole history has every run", async () => (await page.locator("#runs-body tr[data-run]").count()) >= 7);
  await page.screenshot({ path: join(shots, "history.png"), fullPage: true });

  // -------------------------------------------------------------- untrusted output
  await go("#/tasks/xss");
  await page.locator("#run-form").waitFor();
  ok((await page.locator(".page-head .description").textContent()).includes(XSS_SCRIPT), "a task description with a script tag shows as text");
  await page.click("#run-submit");
  await until("the xss run completes", async () => (await runState()) === "completed", 20_000);
  const logText = await page.locator("#log").innerText();
  ok(logText.includes(XSS_SCRIPT) && logText.includes(XSS_IMG), "the log shows the markup as text");
  const payloadText = await page.locator("#payload").innerText();
  ok(payloadText.includes(XSS_SCRIPT) && payloadText.includes("<img src=x onerror="), "the payload shows the markup as text");
  ok((await page.locator("#reason").innerText()).includes(XSS_IMG), "the reason shows the markup as text");
  ok(await page.evaluate(() => window.__xss) === undefined, "no markup ran");
  ok(await page.locator("main img, main script").count() === 0, "no element was made from the output");
  await page.screenshot({ path: join(shots, "run-xss.png"), fullPage: true });

  // -------------------------------------------------------------- a phone
  await page.setViewportSize({ width: 390, height: 844 });
  for (const hash of ["#/tasks", "#/tasks/deploy", deployRun.slice(deployRun.indexOf("#")), "#/runs"]) {
    await go(hash);
    await page.locator("main > *:not(.muted)").first().waitFor();
    await sleep(300);
    const [doc, body] = await page.evaluate(() => [document.documentElement.scrollWidth, document.body.scrollWidth]);
    ok(doc <= 390 && body <= 390, `${hash} fits 390 px (document ${doc}, body ${body})`);
  }
  await go(deployRun.slice(deployRun.indexOf("#")));
  await until("the run page renders on a phone, its log too", async () =>
    (await runState()) === "completed" && (await page.locator("#live-state").textContent()) === "ended");
  await page.screenshot({ path: join(shots, "phone-run.png"), fullPage: true });
  await go("#/tasks/deploy");
  await page.locator("#run-form").waitFor();
  await page.screenshot({ path: join(shots, "phone-form.png"), fullPage: true });
  await go("#/runs");
  await page.locator("#runs-body tr").first().waitFor();
  await page.screenshot({ path: join(shots, "phone-history.png"), fullPage: false });
  await page.setViewportSize({ width: 1280, height: 900 });

  // -------------------------------------------------------------- tokens
  if (process.env.MANAGE_TASKS && process.env.TASK_STORE) {
    const out = execFileSync(process.env.MANAGE_TASKS, ["tokens", "create", "--name", "browser", "--scope", "run", "--json"], { encoding: "utf8" });
    const secret = JSON.parse(out).secret;
    ok(/^te_[0-9a-f]{64}$/.test(secret), "a token was made");
    // A server looks again for tokens at most once a second while it has none.
    await sleep(1500);
    await go("#/tasks");
    await page.reload();
    await until("without a token the page asks for one", async () => await page.locator("#auth").isVisible());
    await page.fill("#auth-token", "te_" + "0".repeat(64));
    await page.click('#auth-form button[type="submit"]');
    await until("a wrong token is refused, saying why", async () =>
      (await page.locator("#auth-message").textContent()).includes("refused"));
    await page.fill("#auth-token", secret);
    await page.click('#auth-form button[type="submit"]');
    await until("with the token the tasks show", async () => (await page.locator("#task-list li").count()) === 4);
    ok(await page.locator("#auth").isHidden(), "the sign-in form is gone");
    ok(await page.evaluate(() => sessionStorage.getItem("task-executor.token")) === secret, "the token is kept in session storage");
    await page.reload();
    await until("a reload stays signed in", async () => (await page.locator("#task-list li").count()) === 4);
    await page.click("#sign-out");
    await until("signing out asks for the token again", async () => await page.locator("#auth").isVisible());
    ok(await page.evaluate(() => sessionStorage.getItem("task-executor.token")) === null, "signing out forgets the token");
  }

  ok(problems.length === 0, "no script error and no CSP violation" + (problems.length ? ": " + problems.join("; ") : ""));
  console.log("all steps passed");
} catch (e) {
  console.error("not ok - " + e.message);
  if (page) {
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
    console.error("page at failure: " + page.url());
    console.error((await page.locator("main").innerText().catch(() => "")).slice(0, 3000));
  }
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
