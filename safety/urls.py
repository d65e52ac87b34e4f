from django.urls import path

from safety import views

app_name = "safety"

urlpatterns = [
    # A participant's adverse events
    path("participants/<int:pk>/adverse-events/", views.ae_list, name="ae_list"),
    path("participants/<int:pk>/adverse-events/new/", views.ae_create, name="ae_create"),
    path("participants/<int:pk>/dlt-adjudication/", views.dlt_adjudicate, name="dlt_adjudicate"),
    # One adverse event
    path("adverse-events/<int:pk>/", views.ae_detail, name="ae_detail"),
    path("adverse-events/<int:pk>/edit/", views.ae_update, name="ae_update"),
    path("adverse-events/<int:pk>/crs/", views.crs_assess, name="crs_assess"),
    path("adverse-events/<int:pk>/icans/", views.icans_assess, name="icans_assess"),
    path("ctcae/grades/", views.ctcae_grades, name="ctcae_grades"),
    # SAE cases and expedited reports
    path("sae/<int:pk>/report/", views.sae_report, name="sae_report"),
    path("sae/<int:pk>/assess/", views.sae_assess, name="sae_assess"),
    path("reports/<int:pk>/submit/", views.report_submit, name="report_submit"),
    # Study level
    path("studies/<slug:study_code>/", views.dashboard, name="dashboard"),
    path("studies/<slug:study_code>/reports/", views.reports, name="reports"),
    path("studies/<slug:study_code>/escalation/", views.escalation, name="escalation"),
]
