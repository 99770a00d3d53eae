// Which device this is: the serial number (or the asset id) the city's inventory and Google's
// Admin console know the Chromebook by, read from chrome.enterprise.deviceAttributes.
//
// That API exists only for an extension force-installed by policy on a managed ChromeOS device,
// and answers "" when the signed-in user is not affiliated with the device's domain. Such a
// device may be a pupil's family computer (a user-level policy follows the account to any
// browser), so by default nothing is measured there. The `unmanaged_device: "install_id"`
// setting counts it instead under a random id made once per profile ("ext-" + 32 hex digits),
// which never identifies a person.
// Nothing here reads the user: no e-mail, no profile name.

export const INSTALL_ID_KEY = "install_id";

function call(chrome, fn) {
  return new Promise((resolve, reject) => {
    try {
      fn((value) => {
        const err = chrome.runtime?.lastError;
        if (err) reject(new Error(err.message));
        else resolve(value);
      });
    } catch (e) {
      reject(e);
    }
  });
}

/**
 * {serial, source, managed, reason}: `serial` is what enrolment sends ("" = do not measure),
 * `source` one of "serial", "asset_id", "install_id", "none"; `reason` says why, for the status page.
 */
export async function deviceIdentity(chrome, config, newId = () => crypto.randomUUID()) {
  const api = chrome.enterprise?.deviceAttributes;
  let why;
  if (api) {
    try {
      const [serial, asset] = await Promise.all([
        call(chrome, (cb) => api.getDeviceSerialNumber(cb)),
        call(chrome, (cb) => api.getDeviceAnnotatedAssetId(cb)),
      ]);
      const want = config.device_identity === "asset_id" ? asset : serial;
      if (want) {
        return { serial: String(want).slice(0, 64), source: config.device_identity, managed: true,
          reason: `managed ChromeOS device (${config.device_identity} from chrome.enterprise.deviceAttributes)` };
      }
      why = config.device_identity === "asset_id" && serial
        ? "the device has no asset id in the Admin console (device_identity is asset_id)"
        : "chrome.enterprise.deviceAttributes answered no serial (the signed-in user is not affiliated with the device's domain)";
    } catch (e) {
      why = `chrome.enterprise.deviceAttributes failed: ${e.message}`;
    }
  } else {
    why = "chrome.enterprise.deviceAttributes is not available (not force-installed on a managed ChromeOS device)";
  }
  if (config.unmanaged_device !== "install_id") {
    return { serial: "", source: "none", managed: false,
      reason: `${why}; nothing is measured (set unmanaged_device to "install_id" to count such devices)` };
  }
  const got = await chrome.storage.local.get(INSTALL_ID_KEY);
  let id = got[INSTALL_ID_KEY];
  if (!id) {
    id = `ext-${newId().replaceAll("-", "")}`;
    await chrome.storage.local.set({ [INSTALL_ID_KEY]: id });
  }
  return { serial: id, source: "install_id", managed: false, reason: `${why}; counted under this profile's install id` };
}
