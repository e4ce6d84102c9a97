import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { mailParameters, outboundDsn, rcptParameters, xtext } from '../../server/delivery/dsn-passing';

describe('xtext', () => {
  test('keeps printable ASCII and encodes "+", "=", spaces, controls and UTF-8 bytes as +HH', () => {
    assert.equal(xtext('rfc822;a.b@example.com'), 'rfc822;a.b@example.com');
    assert.equal(xtext('a+b=c d'), 'a+2Bb+3Dc+20d');
    assert.equal(xtext('\r\n'), '+0D+0A');
    assert.equal(xtext('ö'), '+C3+B6');
  });
});

describe('rcptParameters', () => {
  test('writes NOTIFY (NEVER for []) and ORCPT with only the address in xtext', () => {
    assert.equal(rcptParameters(undefined), '');
    assert.equal(rcptParameters({}), '');
    assert.equal(rcptParameters({ notify: [] }), ' NOTIFY=NEVER');
    assert.equal(rcptParameters({ notify: ['SUCCESS', 'DELAY'] }), ' NOTIFY=SUCCESS,DELAY');
    assert.equal(rcptParameters({ notify: ['FAILURE'], orcpt: 'rfc822;first+list=x@example.com' }), ' NOTIFY=FAILURE ORCPT=rfc822;first+2Blist+3Dx@example.com');
  });
});

describe('mailParameters', () => {
  test("gives nodemailer's dsn option only for RET or ENVID", () => {
    assert.equal(mailParameters(undefined), undefined);
    assert.equal(mailParameters({}), undefined);
    assert.deepEqual(mailParameters({ ret: 'HDRS' }), { ret: 'HDRS' });
    assert.deepEqual(mailParameters({ ret: 'FULL', envid: 'id-1' }), { ret: 'FULL', envid: 'id-1' });
  });
});

describe('outboundDsn', () => {
  test('is undefined for a message whose client gave no DSN parameters', () => {
    assert.equal(outboundDsn({ recipients: [{ address: 'a@x.test', status: 'pending' }] }), undefined);
  });

  test('keeps RET and ENVID and the parameters of the recipients that gave any', () => {
    const dsn = outboundDsn({
      dsn: { envid: 'e1' },
      recipients: [
        { address: 'a@x.test', status: 'pending', notify: [] },
        { address: 'b@x.test', status: 'pending' },
        { address: 'c@x.test', status: 'pending', orcpt: 'rfc822;c@y.test' },
      ],
    });
    assert.deepEqual(dsn?.envelope, { envid: 'e1' });
    assert.deepEqual([...dsn!.recipients.keys()], ['a@x.test', 'c@x.test']);
    assert.deepEqual(dsn!.recipients.get('a@x.test')?.notify, []);
  });
});
