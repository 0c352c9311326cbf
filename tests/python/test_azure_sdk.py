"""The official Azure SDK for Python, a client this project did not write, against the emulator.

It must work unchanged apart from the endpoint, the CA and `verify_challenge_resource` (the
emulator's vault hosts are 127.0.0.1, which cannot match the challenge's vault.azure.net).
"""

import uuid

import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from conftest import new_id


@pytest.fixture(scope="module")
def identity(emulator):
    app_id = new_id()
    secret = "sdk-secret-Q~" + uuid.uuid4().hex
    report = emulator.seed({
        "applications": [{"app_id": app_id, "display_name": "python-sdk", "graph_roles": ["Application.Read.All"], "password_credentials": [{"secret_text": secret}]}],
        "vaults": [{"name": "python-sdk-kv", "access": {app_id: "officer"}}],
    })
    return {"tenant": report["tenant_id"], "app_id": app_id, "secret": secret, "vault": report["vaults"]["python-sdk-kv"]}


def credential(emulator, identity, secret=None):
    return ClientSecretCredential(
        identity["tenant"],
        identity["app_id"],
        secret or identity["secret"],
        authority=emulator.info["authority_host"],
        disable_instance_discovery=True,
        connection_verify=emulator.ca,
    )


def test_client_secret_credential_gets_tokens(emulator, identity):
    cred = credential(emulator, identity)
    token = cred.get_token("https://graph.microsoft.com/.default")
    assert token.token and token.expires_on > 0
    with pytest.raises(ClientAuthenticationError):
        credential(emulator, identity, "not-the-secret").get_token("https://graph.microsoft.com/.default")


@pytest.mark.parametrize("api_version", [None, "7.5", "7.6", "2025-07-01"])
def test_secret_client_full_lifecycle(emulator, identity, api_version):
    kwargs = {"api_version": api_version} if api_version else {}
    client = SecretClient(identity["vault"], credential(emulator, identity), verify_challenge_resource=False, connection_verify=emulator.ca, **kwargs)
    name = "sdk-" + uuid.uuid4().hex[:12]
    first = client.set_secret(name, "value-one", tags={"owner": "python"}, content_type="text/plain")
    assert first.value == "value-one" and first.properties.tags == {"owner": "python"}
    second = client.set_secret(name, "value-two")
    assert client.get_secret(name).value == "value-two"
    assert client.get_secret(name, first.properties.version).value == "value-one"
    versions = {p.version for p in client.list_properties_of_secret_versions(name, max_page_size=1)}
    assert versions == {first.properties.version, second.properties.version}
    assert name in {p.name for p in client.list_properties_of_secrets()}
    updated = client.update_secret_properties(name, second.properties.version, tags={"rotated": "yes"}, enabled=True)
    assert updated.tags == {"rotated": "yes"}
    deleted = client.begin_delete_secret(name).result()
    assert deleted.name == name and deleted.recovery_id.endswith(f"/deletedsecrets/{name}")
    with pytest.raises(ResourceExistsError):
        client.set_secret(name, "value-three")
    assert client.get_deleted_secret(name).name == name
    client.begin_recover_deleted_secret(name).result()
    assert client.get_secret(name).value == "value-two"
    client.begin_delete_secret(name).result()
    client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
