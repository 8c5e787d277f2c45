//! The real host names in the cluster: mapped to the fakes in the hosts file CoreDNS serves to
//! pods, and the fakes' CA handed to pods and the operator in a ConfigMap.

use serde_json::json;

use super::{AML_HOST, AML_IP, ARM_HOST, ARM_IP, ENTRA_HOST, ENTRA_IP, FakeCloud};

fn hosts_file() -> String {
    crate::cluster_env("CLUSTER_HOSTS_FILE")
}

/// Removes the real host names' mapping to the fakes from the hosts file CoreDNS serves.
pub fn unmap_hosts() {
    let path = hosts_file();
    let kept: String = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains("# fake-cloud"))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = std::fs::write(&path, kept);
}

/// Maps the real host names to the fakes in the hosts file CoreDNS serves to pods, and waits
/// until CoreDNS answers them.
pub async fn map_hosts() {
    unmap_hosts();
    let path = hosts_file();
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    for line in FakeCloud::hosts_lines().lines() {
        text.push_str(&format!("{line} # fake-cloud\n"));
    }
    std::fs::write(&path, text).unwrap();
    for (name, ip) in [
        (ENTRA_HOST, ENTRA_IP),
        (ARM_HOST, ARM_IP),
        (AML_HOST, AML_IP),
    ] {
        crate::eventually_ok(
            &format!("CoreDNS to answer {name} with {ip}"),
            std::time::Duration::from_secs(60),
            || resolve(name),
        )
        .await
        .iter()
        .find(|a| *a == ip)
        .unwrap_or_else(|| panic!("CoreDNS answers {name} but not with {ip}"));
    }
}

/// The A records CoreDNS (on the node address) answers for `name`.
async fn resolve(name: &str) -> Result<Vec<String>, String> {
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, "10.250.0.1:53")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(1), sock.recv(&mut buf))
        .await
        .map_err(|_| "no DNS answer within 1 s".to_string())?
        .map_err(|e| e.to_string())?;
    let r = &buf[..n];
    let rcode = r[3] & 0x0f;
    if rcode != 0 {
        return Err(format!("rcode {rcode}"));
    }
    let answers = u16::from_be_bytes([r[6], r[7]]);
    let mut i = q.len();
    let mut out = Vec::new();
    for _ in 0..answers {
        // Name: a pointer or labels.
        if r[i] & 0xc0 == 0xc0 {
            i += 2;
        } else {
            while r[i] != 0 {
                i += r[i] as usize + 1;
            }
            i += 1;
        }
        let rtype = u16::from_be_bytes([r[i], r[i + 1]]);
        let len = u16::from_be_bytes([r[i + 8], r[i + 9]]) as usize;
        i += 10;
        if rtype == 1 && len == 4 {
            out.push(format!("{}.{}.{}.{}", r[i], r[i + 1], r[i + 2], r[i + 3]));
        }
        i += len;
    }
    if out.is_empty() {
        return Err("no A record".into());
    }
    Ok(out)
}

/// A ConfigMap `name` in `ns` holding the fakes' CA (`ca.crt`), for pods and the operator to
/// trust.
pub async fn ca_configmap(client: &kube::Client, ns: &str, name: &str, pem: &str) {
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), ns);
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {"ca.crt": pem},
    }))
    .unwrap();
    cms.create(&Default::default(), &cm)
        .await
        .expect("create the CA ConfigMap");
}
