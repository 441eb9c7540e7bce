//! TLS for PostgreSQL connections (rustls, ring), as libpq's `sslmode`
//! means it: `prefer`/`require` encrypt without checking the certificate,
//! `verify-ca` checks it against the trusted roots, `verify-full` also
//! checks the host name. Trusted roots, as in libpq: the certificates of
//! `sslrootcert` alone (a private CA must not be joined by every public
//! one: with `verify-ca`, any certificate they signed, for any name, would
//! pass), or with `sslrootcert=system` the system's, for `verify-full` only.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::{PgConfig, Tls};

/// The connector for `config`'s `sslmode`.
pub(crate) fn connector(config: &PgConfig) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let tls = match config.tls {
        Tls::Disable | Tls::Prefer | Tls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        Tls::VerifyCa | Tls::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match config.root_cert.as_deref() {
                None => {
                    return Err(
                        "sslmode verify-ca/verify-full needs the CA that signed the \
                                server's certificate: set sslrootcert=/path/ca.pem (or \
                                PGSSLROOTCERT, or put it at ~/.postgresql/root.crt), or \
                                sslrootcert=system with sslmode=verify-full to trust the \
                                system's roots"
                            .into(),
                    );
                }
                Some(system) if system == Path::new("system") => {
                    if config.tls == Tls::VerifyCa {
                        return Err("sslrootcert=system needs sslmode=verify-full: with \
                                    verify-ca, any certificate a public CA signed, for any \
                                    name, would be accepted"
                            .into());
                    }
                    for cert in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(cert);
                    }
                    if roots.is_empty() {
                        return Err("sslrootcert=system: this system has no trusted roots \
                                    (install ca-certificates, or give sslrootcert=/path/ca.pem)"
                            .into());
                    }
                }
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| {
                            format!("cannot read sslrootcert `{}`: {e}", path.display())
                        })?;
                    for cert in certs {
                        roots.add(cert).map_err(|e| {
                            format!(
                                "sslrootcert `{}` holds a bad certificate: {e}",
                                path.display()
                            )
                        })?;
                    }
                    if roots.is_empty() {
                        return Err(format!(
                            "sslrootcert `{}` holds no certificate (PEM, `-----BEGIN CERTIFICATE-----`)",
                            path.display()
                        ));
                    }
                }
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
            if config.tls == Tls::VerifyFull {
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(MakeRustlsConnect::new(tls))
}

/// `require`: encrypted, the certificate taken as it is (libpq does the same).
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain checked, the name not.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::parse;
    use super::connector;

    fn none(_: &str) -> Option<String> {
        None
    }

    fn error_of(url: &str) -> String {
        let config = parse(url, &none).unwrap();
        connector(&config).err().expect("an error")
    }

    #[test]
    fn verifying_modes_trust_only_the_roots_they_are_given() {
        let e = error_of("postgres://h/db?sslmode=verify-ca");
        assert!(e.contains("set sslrootcert=/path/ca.pem"), "{e}");
        let e = error_of("postgres://h/db?sslmode=verify-ca&sslrootcert=system");
        assert!(e.contains("needs sslmode=verify-full"), "{e}");
        let e = error_of("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        assert!(
            e.contains("cannot read sslrootcert `/nonexistent/ca.pem`"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = error_of(&format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ));
        assert!(e.contains("holds no certificate"), "{e}");
        // Modes that do not verify need no roots.
        for mode in ["disable", "prefer", "require"] {
            let config = parse(&format!("postgres://h/db?sslmode={mode}"), &none).unwrap();
            assert!(connector(&config).is_ok(), "{mode}");
        }
    }

    #[test]
    fn the_default_root_is_home_postgresql_root_crt() {
        let home = tempfile::tempdir().unwrap();
        let env = |k: &str| (k == "HOME").then(|| home.path().display().to_string());
        let c = parse("postgres://h/db?sslmode=verify-full", &env).unwrap();
        assert_eq!(c.root_cert, None, "no such file: no default");
        std::fs::create_dir(home.path().join(".postgresql")).unwrap();
        std::fs::write(home.path().join(".postgresql/root.crt"), "").unwrap();
        let c = parse("postgres://h/db?sslmode=verify-full", &env).unwrap();
        assert_eq!(c.root_cert, Some(home.path().join(".postgresql/root.crt")));
        let c = parse(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/x.pem",
            &env,
        )
        .unwrap();
        assert_eq!(c.root_cert, Some("/x.pem".into()), "the URL wins");
    }
}
