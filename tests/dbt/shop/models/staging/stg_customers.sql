-- Renames and a derived column, as dbt staging models do.
select
    id as customer_id,
    first_name || ' ' || last_name as customer_name,
    upper(coalesce(country, 'unknown')) as country,
    signup_date
from {{ source('crm', 'raw_customers') }}
