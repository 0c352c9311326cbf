"""A plain sequential rotation on the official Azure SDKs for Python: the baseline the scale
benchmark's side-by-side scenario compares the daemon's CPU time with.

For each client, one after the other, what the daemon does: read the application (Graph, with
$select) and the published vault secret, addPassword, token requests with the new secret until
one succeeds (immediately, then after 1 s, 2 s, ... as the daemon spaces them), publish the new
version with the daemon's tags. Then, as the daemon's retirement reconcile does, for each
client: read the application and the secret's versions again, and removePassword the
credential the old version named.

Graph through msgraph-sdk (Kiota, httpx), Key Vault through azure-keyvault-secrets, tokens
through azure-identity's ClientSecretCredential (one credential, its token cache per scope, as
the daemon's). Usage: python rotate.py SPEC.json, where SPEC names the emulator's endpoints, its
CA, the daemon's identity and the clients. Prints one JSON line: rotations, CPU seconds of this
process (user + system, interpreter start-up and imports included), and the CPU seconds spent
before the first request (start-up and imports).
"""

import asyncio
import datetime
import json
import resource
import ssl
import sys
import time
import uuid
from urllib.parse import urlparse


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


import httpx  # noqa: E402
from azure.core.exceptions import ClientAuthenticationError  # noqa: E402
from azure.identity import ClientSecretCredential  # noqa: E402
from azure.keyvault.secrets import SecretClient  # noqa: E402
from kiota_abstractions.base_request_configuration import RequestConfiguration  # noqa: E402
from kiota_authentication_azure.azure_identity_authentication_provider import (  # noqa: E402
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient  # noqa: E402
from msgraph.generated.applications.item.add_password.add_password_post_request_body import (  # noqa: E402
    AddPasswordPostRequestBody,
)
from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (  # noqa: E402
    RemovePasswordPostRequestBody,
)
from msgraph.generated.applications_with_app_id.applications_with_app_id_request_builder import (  # noqa: E402
    ApplicationsWithAppIdRequestBuilder,
)
from msgraph.generated.models.password_credential import PasswordCredential  # noqa: E402
from msgraph_core import GraphClientFactory  # noqa: E402

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
SELECT = ["id", "appId", "displayName", "passwordCredentials", "keyCredentials"]


async def main(spec):
    startup = cpu_seconds()
    ca = spec["ca_file"]

    def credential(client_id, secret):
        return ClientSecretCredential(
            spec["tenant_id"],
            client_id,
            secret,
            authority=spec["authority_host"],
            disable_instance_discovery=True,
            connection_verify=ca,
        )

    daemon = credential(spec["client_id"], spec["client_secret"])
    auth = AzureIdentityAuthenticationProvider(
        daemon,
        scopes=[GRAPH_SCOPE],
        allowed_hosts=[urlparse(spec["graph_endpoint"]).hostname],
        is_cae_enabled=False,
    )
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ca, trust_env=False)
    )
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = spec["graph_endpoint"].rstrip("/") + "/v1.0"
    graph = GraphServiceClient(request_adapter=adapter)
    vaults = {}

    def vault(url):
        if url not in vaults:
            vaults[url] = SecretClient(
                url, daemon, verify_challenge_resource=False, connection_verify=ca
            )
        return vaults[url]

    async def application(app_id):
        query = ApplicationsWithAppIdRequestBuilder.ApplicationsWithAppIdRequestBuilderGetQueryParameters(
            select=SELECT
        )
        return await graph.applications_with_app_id(app_id).get(
            request_configuration=RequestConfiguration(query_parameters=query)
        )

    retire = []
    for c in spec["clients"]:
        app = await application(c["app_id"])
        published = vault(c["vault_url"]).get_secret(c["secret_name"])
        old_key = published.properties.tags["key-id"]
        rotation_id = "py-" + uuid.uuid4().hex[:12]
        end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=90)
        new = await graph.applications.by_application_id(app.id).add_password.post(
            AddPasswordPostRequestBody(
                password_credential=PasswordCredential(
                    display_name=f"secret-rotator:python:{c['name']}:{rotation_id}",
                    end_date_time=end,
                )
            )
        )
        wait = 1.0
        while True:
            try:
                credential(c["app_id"], new.secret_text).get_token(GRAPH_SCOPE)
                break
            except ClientAuthenticationError as e:
                if "AADSTS7000215" not in str(e):
                    raise
            time.sleep(wait)
            wait = min(wait * 2, 15.0)
        vault(c["vault_url"]).set_secret(
            c["secret_name"],
            new.secret_text,
            expires_on=end,
            tags={
                "managed-by": "secret-rotator",
                "client-id": c["app_id"],
                "key-id": str(new.key_id),
                "rotation-id": rotation_id,
            },
        )
        retire.append((c, app.id, old_key))

    for c, object_id, old_key in retire:
        await application(c["app_id"])
        list(vault(c["vault_url"]).list_properties_of_secret_versions(c["secret_name"]))
        await graph.applications.by_application_id(object_id).remove_password.post(
            RemovePasswordPostRequestBody(key_id=uuid.UUID(old_key))
        )
    await http.aclose()
    print(
        json.dumps(
            {
                "rotations": len(retire),
                "cpu_seconds": cpu_seconds(),
                "startup_cpu_seconds": startup,
                # The baseline's cost depends on both: OpenSSL 3.0 takes about 60 ms to make
                # a default SSL context, which every new credential pays.
                "runtime": f"Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}",
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
