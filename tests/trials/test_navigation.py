"""The header offers only the pages a role can open."""

from tests.factories import infused


def test_the_durability_link_is_for_analytics_roles_only(client, study, sites, coordinator_site_a, statistician):
    participant = infused(study, sites[0], coordinator_site_a)
    client.force_login(coordinator_site_a)
    assert b"Durability</a>" not in client.get(f"/participants/{participant.pk}/").content
    client.force_login(statistician)
    page = client.get(f"/participants/{participant.pk}/").content.decode()
    assert f'href="/analytics/studies/{study.code}/"' in page
