//! The cluster's credentials in the data directory: a CA and a serving certificate (rcgen),
//! the admin bearer token, the node join token and `admin.kubeconfig`. Created on the first
//! start, reused afterwards.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Errors while creating or loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate {what}: {source}")]
    Rcgen {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file could not be parsed.
    #[error("cannot parse {path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Everything the server needs to serve TLS and authenticate.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The serving certificate chain (PEM: server, then CA).
    pub server_cert_pem: String,
    /// The serving key (PKCS#8 PEM).
    pub server_key_pem: String,
    /// The admin bearer token.
    pub admin_token: String,
    /// The node join token.
    pub node_token: String,
    /// The client certificate (PEM: client, then CA) the API server shows the agents'
    /// logs/exec endpoints; minted from the CA on every start.
    pub kubelet_client_cert_pem: String,
    /// Its key (PKCS#8 PEM).
    pub kubelet_client_key_pem: String,
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file atomically (temp file, fsync, rename) with mode 0600.
fn write_private(path: &Path, contents: &str) -> Result<(), CertsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A random token: 32 bytes from the kernel, hex.
pub fn random_token() -> Result<String, CertsError> {
    Ok(hex::encode(random_bytes::<32>()?))
}

/// `N` random bytes from /dev/urandom.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CertsError> {
    use std::io::Read;
    let path = Path::new("/dev/urandom");
    let io = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = [0u8; N];
    std::fs::File::open(path)
        .map_err(io)?
        .read_exact(&mut buf)
        .map_err(io)?;
    Ok(buf)
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertsError {
    move |source| CertsError::Rcgen { what, source }
}

/// The subject alternative names of the serving certificate.
pub fn server_sans(listen_ip: IpAddr, service_ip: IpAddr) -> Vec<SanType> {
    let mut names = vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_string();
        if !h.is_empty() && !names.contains(&h) {
            names.push(h);
        }
    }
    let mut sans: Vec<SanType> = names
        .into_iter()
        .filter_map(|n| n.try_into().ok().map(SanType::DnsName))
        .collect();
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        service_ip,
    ];
    if !listen_ip.is_unspecified() && !ips.contains(&listen_ip) {
        ips.push(listen_ip);
    }
    sans.extend(ips.into_iter().map(SanType::IpAddress));
    sans
}

/// The CA's parameters (the same on every start, so the stored key can sign again).
fn ca_params() -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc("ca params"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "skiff-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

/// Loads the credentials from `dir`, creating whatever is missing.
pub fn load_or_create(
    dir: &Path,
    listen_ip: IpAddr,
    service_ip: IpAddr,
) -> Result<Credentials, CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let (ca_pem, ca_key_pem) = if ca_crt.exists() && ca_key.exists() {
        (read(&ca_crt)?, read(&ca_key)?)
    } else {
        let key = KeyPair::generate().map_err(rc("ca key"))?;
        let params = ca_params()?;
        let cert = params.self_signed(&key).map_err(rc("ca sign"))?;
        let (c, k) = (cert.pem(), key.serialize_pem());
        write_private(&ca_key, &k)?;
        write_private(&ca_crt, &c)?;
        // a new CA invalidates any old serving certificate
        let _ = std::fs::remove_file(dir.join("server.crt"));
        (c, k)
    };
    let srv_crt = dir.join("server.crt");
    let srv_key = dir.join("server.key");
    let (server_cert_pem, server_key_pem) = if srv_crt.exists() && srv_key.exists() {
        (read(&srv_crt)?, read(&srv_key)?)
    } else {
        let ca_kp = KeyPair::from_pem(&ca_key_pem).map_err(rc("ca key parse"))?;
        // the issuer is identified by its name and key, which are all rcgen needs
        let issuer = Issuer::new(ca_params()?, ca_kp);
        let key = KeyPair::generate().map_err(rc("server key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(rc("server params"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.subject_alt_names = server_sans(listen_ip, service_ip);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.signed_by(&key, &issuer).map_err(rc("server sign"))?;
        let chain = format!("{}{}", cert.pem(), ca_pem);
        let k = key.serialize_pem();
        write_private(&srv_key, &k)?;
        write_private(&srv_crt, &chain)?;
        (chain, k)
    };
    let token = |name: &str| -> Result<String, CertsError> {
        let path = dir.join(name);
        if path.exists() {
            Ok(read(&path)?.trim().to_string())
        } else {
            let t = random_token()?;
            write_private(&path, &format!("{t}\n"))?;
            Ok(t)
        }
    };
    let admin_token = token("admin-token")?;
    let node_token = token("node-token")?;
    let (kubelet_client_cert_pem, kubelet_client_key_pem) =
        kubelet_client_cert(&ca_pem, &ca_key_pem)?;
    Ok(Credentials {
        ca_pem,
        server_cert_pem,
        server_key_pem,
        admin_token,
        node_token,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
    })
}

/// A client certificate for the agents (kube-apiserver's `--kubelet-client-certificate`):
/// CN `kube-apiserver-kubelet-client`, O `system:masters`, client auth, signed by the CA.
/// Returns (chain PEM, key PEM).
pub fn kubelet_client_cert(ca_pem: &str, ca_key_pem: &str) -> Result<(String, String), CertsError> {
    let ca_kp = KeyPair::from_pem(ca_key_pem).map_err(rc("ca key parse"))?;
    let issuer = Issuer::new(ca_params()?, ca_kp);
    let key = KeyPair::generate().map_err(rc("kubelet client key"))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(rc("kubelet client params"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver-kubelet-client");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rc("kubelet client sign"))?;
    Ok((format!("{}{}", cert.pem(), ca_pem), key.serialize_pem()))
}

/// The agents' serving certificates are self-signed (the kubelet's default), so, as
/// kube-apiserver without `--kubelet-certificate-authority`, the API server does not verify
/// them; signatures are still checked, so the handshake is sound.
#[derive(Debug)]
struct AnyAgentCert(Arc<rustls::crypto::CryptoProvider>);

use std::sync::Arc;

impl rustls::client::danger::ServerCertVerifier for AnyAgentCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration for the agents' endpoints: our kubelet client certificate,
/// HTTP/1.1 (upgrades for exec and attach).
pub fn kubelet_client_tls(
    creds: &Credentials,
    dir: &Path,
) -> Result<rustls::ClientConfig, CertsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem_err = |message: String| CertsError::Pem {
        path: dir.join("kubelet-client"),
        message,
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(creds.kubelet_client_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(creds.kubelet_client_key_pem.as_bytes())
        .map_err(|e| pem_err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| pem_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyAgentCert(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| pem_err(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The API server URL of the admin kubeconfig for a server bound to `addr`: the bound
/// address itself, or loopback when it listens on all addresses (a master bound to one LAN
/// address is not reachable on 127.0.0.1, and its own controllers use this file).
pub fn kubeconfig_server(addr: std::net::SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match addr.ip() {
            IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(_) => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        }
    } else {
        addr.ip()
    };
    format!("https://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// Writes `DIR/admin.kubeconfig` for the server bound to `addr` ([`kubeconfig_server`])
/// with the admin token.
pub fn write_kubeconfig(
    dir: &Path,
    creds: &Credentials,
    addr: std::net::SocketAddr,
) -> Result<PathBuf, CertsError> {
    let ca = base64::engine::general_purpose::STANDARD.encode(creds.ca_pem.as_bytes());
    let server = kubeconfig_server(addr);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\ncurrent-context: skiff\n",
        creds.admin_token
    );
    let path = dir.join("admin.kubeconfig");
    write_private(&path, &text)?;
    Ok(path)
}

/// A rustls server configuration for the serving certificate.
pub fn server_tls_config(
    creds: &Credentials,
    dir: &Path,
) -> Result<rustls::ServerConfig, CertsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem_err = |message: String| CertsError::Pem {
        path: dir.join("server.crt"),
        message,
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(creds.server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(creds.server_key_pem.as_bytes())
        .map_err(|e| pem_err(e.to_string()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pem_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| pem_err(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_server_is_the_bound_address_or_loopback() {
        for (addr, want) in [
            ("0.0.0.0:6443", "https://127.0.0.1:6443"),
            ("127.0.0.1:41000", "https://127.0.0.1:41000"),
            ("10.77.0.1:6443", "https://10.77.0.1:6443"),
            ("[::]:6443", "https://[::1]:6443"),
            ("[fd00::1]:6443", "https://[fd00::1]:6443"),
        ] {
            assert_eq!(kubeconfig_server(addr.parse().unwrap()), want, "{addr}");
        }
    }
}
