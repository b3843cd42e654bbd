// Bootstraps one region's replica set and its service user. Run by that region's one-shot
// `mongo-rN-init` service with mongosh, connected directly to the first member:
//
//   mongosh --quiet "mongodb://mongo-r1a:27017/?directConnection=true" --file init-replica-set.js
//
// Environment:
//   RS_NAME                   replica set name, which is the region name (region_1, ...)
//   RS_MEMBERS                comma-separated host:port of the members; the first one is preferred
//                             as primary (priority 2), so a port published for it reaches the
//                             primary
//   RS_PRIMARY_TIMEOUT_MS     how long to wait for a primary and a majority of healthy members
//   ROOT_USERNAME             the administrator the members' entrypoint made on their first start
//   ROOT_PASSWORD_FILE        its password, a Docker secret
//   APP_USERNAME              the services' user: readWrite on APP_DATABASE, nothing else
//   APP_PASSWORD_FILE         its password, a Docker secret
//   APP_DATABASE              the services' database (REGIONSTORE_STORE__DATABASE)
//
// Idempotent: a set that is already initiated is left as it is (only its name is checked), and
// the service user is created, or given the current password and role, so `docker compose up`
// can run this on every start (and rotates the password). Exits non-zero when the set is not
// usable in time, so services that depend on it with `service_completed_successfully` do not
// start.

const NOT_YET_INITIALIZED = 94;
const ALREADY_INITIALIZED = 23;
const HEALTHY_STATES = ["PRIMARY", "SECONDARY"];

function fail(message) {
  print(`init-replica-set: ${message}`);
  quit(1);
}

const LOGIN_SETTINGS = [
  "ROOT_USERNAME",
  "ROOT_PASSWORD_FILE",
  "APP_USERNAME",
  "APP_PASSWORD_FILE",
  "APP_DATABASE",
];

function readSecret(path) {
  const secret = require("fs").readFileSync(path, "utf8").trim();
  if (!secret) {
    fail(`${path} is empty`);
  }
  return secret;
}

function readSettings() {
  const name = process.env.RS_NAME || "";
  const hosts = (process.env.RS_MEMBERS || "")
    .split(",")
    .map((host) => host.trim())
    .filter((host) => host.length > 0);
  const timeoutMs = Number(process.env.RS_PRIMARY_TIMEOUT_MS || "120000");
  if (!name || hosts.length === 0 || !(timeoutMs > 0)) {
    fail("RS_NAME, RS_MEMBERS and a positive RS_PRIMARY_TIMEOUT_MS are required");
  }
  const missing = LOGIN_SETTINGS.filter((key) => !process.env[key]);
  if (missing.length > 0) {
    fail(`${missing.join(", ")} required`);
  }
  const env = process.env;
  return {
    name,
    hosts,
    timeoutMs,
    root: { user: env.ROOT_USERNAME, pwd: readSecret(env.ROOT_PASSWORD_FILE) },
    app: {
      user: env.APP_USERNAME,
      pwd: readSecret(env.APP_PASSWORD_FILE),
      database: env.APP_DATABASE,
    },
  };
}

function replicaSetConfig(name, hosts) {
  return {
    _id: name,
    members: hosts.map((host, index) => ({ _id: index, host, priority: index === 0 ? 2 : 1 })),
  };
}

// mongosh throws on a failed command; the check on `ok` keeps this correct if a shell does not.
function adminCommand(command) {
  const reply = db.adminCommand(command);
  if (reply.ok !== 1) {
    const error = new Error(reply.errmsg || `command failed: ${JSON.stringify(command)}`);
    error.code = reply.code;
    throw error;
  }
  return reply;
}

// The current replica set status, or null when the member has no replica set config yet.
function currentStatus() {
  try {
    return adminCommand({ replSetGetStatus: 1 });
  } catch (error) {
    if (error.code === NOT_YET_INITIALIZED) {
      return null;
    }
    throw error;
  }
}

function initiate(name, hosts) {
  try {
    adminCommand({ replSetInitiate: replicaSetConfig(name, hosts) });
    print(`init-replica-set: initiated ${name} with ${hosts.join(", ")}`);
  } catch (error) {
    // Another run got there first between our status check and this call: same outcome.
    if (error.code !== ALREADY_INITIALIZED) {
      throw error;
    }
  }
}

function isUsable(status) {
  if (!status || !Array.isArray(status.members)) {
    return false;
  }
  const healthy = status.members.filter((member) => HEALTHY_STATES.includes(member.stateStr));
  const hasPrimary = healthy.some((member) => member.stateStr === "PRIMARY");
  // Writes use w=majority, so a primary alone is not enough to accept them.
  return hasPrimary && healthy.length > status.members.length / 2;
}

function waitUntilUsable(name, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let status = null;
    try {
      status = currentStatus();
    } catch (error) {
      print(`init-replica-set: status not available yet: ${error.message}`);
    }
    if (isUsable(status)) {
      print(`init-replica-set: ${name} has a primary and a healthy majority`);
      return;
    }
    if (Date.now() >= deadline) {
      fail(`${name} has no primary with a healthy majority after ${timeoutMs} ms`);
    }
    sleep(1000);
  }
}

// Users are written on the primary; the first member is preferred, so it becomes the primary.
function waitUntilPrimaryHere(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!adminCommand({ hello: 1 }).isWritablePrimary) {
    if (Date.now() >= deadline) {
      fail(`this member is not primary after ${timeoutMs} ms`);
    }
    sleep(1000);
  }
}

// Creates the services' user, or brings its password and role up to date.
function ensureAppUser(app) {
  const roles = [{ role: "readWrite", db: app.database }];
  const found = adminCommand({ usersInfo: app.user }).users || [];
  if (found.length === 0) {
    adminCommand({ createUser: app.user, pwd: app.pwd, roles });
    print(`init-replica-set: created user ${app.user}`);
  } else {
    adminCommand({ updateUser: app.user, pwd: app.pwd, roles });
    print(`init-replica-set: updated user ${app.user}`);
  }
}

function main() {
  const { name, hosts, timeoutMs, root, app } = readSettings();
  // The members run with a keyfile, so with authorization: nothing works before this.
  db.getSiblingDB("admin").auth(root.user, root.pwd);
  const status = currentStatus();
  if (status === null) {
    initiate(name, hosts);
  } else if (status.set !== name) {
    fail(`member belongs to replica set ${status.set}, expected ${name}`);
  } else {
    print(`init-replica-set: ${name} already initiated, leaving its config as it is`);
  }
  waitUntilUsable(name, timeoutMs);
  waitUntilPrimaryHere(timeoutMs);
  ensureAppUser(app);
}

main();
